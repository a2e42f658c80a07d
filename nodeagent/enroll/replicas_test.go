package enroll

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestReplicasFile: the replica list a heartbeat named is kept 0644 and read
// back before the bootstrap URL, which stays last; a damaged or hostile file
// falls back to the bootstrap URL alone; a bootstrap forgets the list.
func TestReplicasFile(t *testing.T) {
	dir := enrolled(t)
	st, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	boot := st.Config.Server
	if got := st.Servers(); !slices.Equal(got, []string{boot}) {
		t.Fatalf("no file: %v", got)
	}
	list := []string{"https://r1.example:7443", "https://r2.example:7443"}
	if err := SaveReplicas(dir, list); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ReplicasFile)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("replicas file: %v %v", fi, err)
	}
	if got := st.Servers(); !slices.Equal(got, append(slices.Clone(list), boot)) {
		t.Fatalf("servers %v", got)
	}
	for _, bad := range [][]string{nil, {"http://plain:1"}, {"https://a/path"}} {
		if err := SaveReplicas(dir, bad); err == nil {
			t.Errorf("saved %q", bad)
		}
	}
	for _, content := range []string{"not json", `{"servers":["http://plain:1"]}`, `{"servers":["https://a:1"]}` + strings.Repeat(" ", 70<<10)} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := st.Servers(); !slices.Equal(got, []string{boot}) {
			t.Fatalf("file %.30q: servers %v", content, got)
		}
	}
	if err := removeReplicas(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("replicas file left: %v", err)
	}
}
