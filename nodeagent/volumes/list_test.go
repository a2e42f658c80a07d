package volumes

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestListChunks: a chunked scan sees every volume once, in order, and
// nothing else (temporaries, tombs, stray files).
func TestListChunks(t *testing.T) {
	root := filepath.Join(t.TempDir(), "pool")
	d := mustNew(t, DriverDir, root, "node-a")
	var want []string
	for i := range 23 {
		name := fmt.Sprintf("vol-%02d", (i*7)%23) // created out of order
		if _, err := d.Create(bg, CreateOptions{Name: name, Size: mib}); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	slices.Sort(want)
	for _, junk := range []string{".tmp-node-a-x-1", ".del-node-b-y.qcow2", "notes.txt", "bad name.qcow2"} {
		if err := os.WriteFile(filepath.Join(root, dirVolumes, junk), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, limit := range []int{1, 5, 23, 100} {
		var got []string
		after, calls := "", 0
		for {
			pg, err := d.List(bg, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(pg.Names) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(pg.Names))
			}
			got = append(got, pg.Names...)
			calls++
			if pg.Next == "" {
				break
			}
			after = pg.Next
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: got %v, want %v", limit, got, want)
		}
		if wantCalls := (len(want) + limit - 1) / limit; calls != wantCalls {
			t.Fatalf("limit %d: %d calls, want %d", limit, calls, wantCalls)
		}
	}
	// A cursor naming a volume deleted meanwhile still continues after it.
	pg, err := d.List(bg, "vol-10a", 2)
	if err != nil || !slices.Equal(pg.Names, []string{"vol-11", "vol-12"}) {
		t.Fatalf("List after a missing name: %+v %v", pg, err)
	}
}
