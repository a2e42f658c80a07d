package volumes

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

var badNames = []string{
	"", ".", "..", "../x", "../../etc/passwd", "a/b", "/abs", ".hidden", ".tmp-node-a-x",
	"a\x00b", "a b", "a\\b", "-lead", "_lead", "é", "a\nb", strings.Repeat("a", MaxNameLen+1),
}

func TestValidName(t *testing.T) {
	for _, s := range []string{"a", "vm-1", "01JE6Z8Q3K4X7Y9ABCDEF", "x.y_z-1", strings.Repeat("a", MaxNameLen)} {
		if !ValidName(s) {
			t.Errorf("ValidName(%q) = false", s)
		}
	}
	for _, s := range badNames {
		if ValidName(s) {
			t.Errorf("ValidName(%q) = true", s)
		}
	}
}

// TestPathTraversalRefused calls every operation with hostile names and
// checks each is refused with CodeNameInvalid and that nothing appeared
// outside (or inside) the pool.
func TestPathTraversalRefused(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "pool")
	d := mustNew(t, DriverDir, root, "node-a")
	if _, err := d.Create(bg, CreateOptions{Name: "ok", Size: mib}); err != nil {
		t.Fatal(err)
	}
	before := tree(t, parent)
	for _, bad := range badNames {
		t.Run(strings.ToValidUTF8(bad, "?"), func(t *testing.T) {
			errs := map[string]error{}
			_, errs["create"] = d.Create(bg, CreateOptions{Name: bad, Size: mib})
			_, errs["clone name"] = d.Clone(bg, CloneOptions{Name: bad, Source: "ok"})
			_, errs["clone source"] = d.Clone(bg, CloneOptions{Name: "c", Source: bad})
			_, errs["resize"] = d.Resize(bg, bad, 2*mib)
			errs["delete"] = d.Delete(bg, bad)
			_, errs["stat"] = d.Stat(bg, bad)
			_, errs["snapshot volume"] = d.CreateSnapshot(bg, bad, "s")
			_, errs["snapshot name"] = d.CreateSnapshot(bg, "ok", bad)
			errs["delete snapshot"] = d.DeleteSnapshot(bg, "ok", bad)
			_, errs["list snapshots"] = d.ListSnapshots(bg, bad)
			_, errs["open"] = d.Open(bg, bad, 1)
			errs["release"] = d.Release(bg, bad)
			if bad != "" { // "" means "no snapshot" and "from the start"
				_, errs["clone snapshot"] = d.Clone(bg, CloneOptions{Name: "c", Source: "ok", Snapshot: bad})
				_, errs["list after"] = d.List(bg, bad, 10)
			}
			for op, err := range errs {
				if ErrorCode(err) != CodeNameInvalid {
					t.Errorf("%s(%q) = %v, want %s", op, bad, err, CodeNameInvalid)
				}
			}
		})
	}
	if after := tree(t, parent); !slices.Equal(before, after) {
		t.Fatalf("files changed:\nbefore %v\nafter  %v", before, after)
	}
	for _, node := range []string{"../n", "", "a/b"} {
		if _, err := New(DriverDir, Config{Root: root, Node: node}); ErrorCode(err) != CodeNameInvalid {
			t.Errorf("New with node %q: %v", node, err)
		}
	}
	if _, err := New(DriverDir, Config{Root: "rel/pool", Node: "n"}); ErrorCode(err) != CodeDriverUnsupported {
		t.Errorf("relative root: %v", err)
	}
	if _, err := New("zfs", Config{Root: root, Node: "n"}); ErrorCode(err) != CodeDriverUnsupported {
		t.Errorf("unknown driver: %v", err)
	}
	if _, err := New(DriverBtrfs, Config{Root: root, Node: "n"}); ErrorCode(err) != CodeDriverUnsupported {
		t.Errorf("btrfs on a non-btrfs directory: %v", err)
	}
}

func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// FuzzValidName: a name ValidName accepts is one plain path component
// under the pool that cannot be a temporary or a parent, for any input.
func FuzzValidName(f *testing.F) {
	for _, s := range append(badNames, "vm-1", "a.b", "A_9") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidName(s) {
			if checkName("volume", s) == nil {
				t.Fatalf("checkName accepted %q", s)
			}
			return
		}
		root := "/srv/pool/volumes"
		p := filepath.Join(root, s+".qcow2")
		if filepath.Dir(p) != root || filepath.Base(p) != s+".qcow2" {
			t.Fatalf("%q escapes %s: %s", s, root, p)
		}
		if s == "." || s == ".." || strings.HasPrefix(s, ".") || strings.ContainsAny(s, "/\\\x00") {
			t.Fatalf("accepted %q", s)
		}
		if !utf8.ValidString(s) || len(s) > MaxNameLen || strings.ContainsFunc(s, func(r rune) bool { return r > 0x7e || r < 0x21 }) {
			t.Fatalf("accepted %q", s)
		}
	})
}
