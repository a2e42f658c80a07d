package messages

import (
	"errors"
	"testing"
)

func codeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestValidateVolumeSize(t *testing.T) {
	for _, tc := range []struct {
		size int64
		ok   bool
	}{
		{0, false}, {-512, false}, {-1, false}, {511, false}, {1000, false}, {1<<30 + 1, false},
		{512, true}, {1 << 30, true}, {1 << 50, true}, {1<<50 + 512, false},
	} {
		err := ValidateVolumeSize("size", tc.size)
		if (err == nil) != tc.ok {
			t.Errorf("size %d: err %v, want ok=%v", tc.size, err, tc.ok)
		}
		if err != nil && codeOf(err) != "invalid_field" {
			t.Errorf("size %d: code %q, want invalid_field", tc.size, codeOf(err))
		}
	}
}

func TestCheckVolumeGrow(t *testing.T) {
	v := &Volume{Name: "data", Spec: VolumeSpec{SizeBytes: 1 << 30}}
	if err := CheckVolumeGrow(v, 1<<29); codeOf(err) != "volume_shrink_unsupported" {
		t.Fatalf("shrink: %v", err)
	}
	if err := CheckVolumeGrow(v, 1<<30); err != nil {
		t.Fatalf("same size: %v", err)
	}
	if err := CheckVolumeGrow(v, 2<<30); err != nil {
		t.Fatalf("grow: %v", err)
	}
	if err := CheckVolumeGrow(v, 2<<30+1); codeOf(err) != "invalid_field" {
		t.Fatalf("unaligned grow: %v", err)
	}
}

func TestValidatePoolPath(t *testing.T) {
	for path, ok := range map[string]bool{
		"/srv/otherix/fast": true, "/var/lib/otherix/pools/a": true,
		"": false, "relative/dir": false, "/srv/../etc": false, "/srv/a/": false, "/srv//a": false,
		"/": false, "/proc/self": false, "/sys": false, "/etc/otherix": false, "/srv/a\nb": false,
		"/srv/./a": false,
	} {
		err := ValidatePoolPath("spec.path", path)
		if (err == nil) != ok {
			t.Errorf("%q: err %v, want ok=%v", path, err, ok)
		}
	}
}

func TestBuildPool(t *testing.T) {
	ok := CreatePoolRequest{Name: "fast", Spec: PoolSpec{Driver: "dir", Path: "/srv/fast", Nodes: []string{"n2", "n1"}}}
	p, err := BuildPool(ok)
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.Nodes[0] != "n1" || ok.Spec.Nodes[0] != "n2" {
		t.Fatalf("nodes not sorted into a copy: %v (request %v)", p.Spec.Nodes, ok.Spec.Nodes)
	}
	for name, req := range map[string]CreatePoolRequest{
		"bad name":    {Name: "../x", Spec: PoolSpec{Driver: "dir", Path: "/srv/x", AllNodes: true}},
		"no driver":   {Name: "x", Spec: PoolSpec{Path: "/srv/x", AllNodes: true}},
		"lvm":         {Name: "x", Spec: PoolSpec{Driver: "lvm", Path: "/srv/x", AllNodes: true}},
		"no path":     {Name: "x", Spec: PoolSpec{Driver: "dir", AllNodes: true}},
		"no nodes":    {Name: "x", Spec: PoolSpec{Driver: "dir", Path: "/srv/x"}},
		"both":        {Name: "x", Spec: PoolSpec{Driver: "dir", Path: "/srv/x", AllNodes: true, Nodes: []string{"a"}}},
		"twice":       {Name: "x", Spec: PoolSpec{Driver: "dir", Path: "/srv/x", Nodes: []string{"a", "a"}}},
		"bad node":    {Name: "x", Spec: PoolSpec{Driver: "dir", Path: "/srv/x", Nodes: []string{"A/b"}}},
		"traversal":   {Name: "x", Spec: PoolSpec{Driver: "btrfs", Path: "/srv/x/../../etc", AllNodes: true}},
		"upper name":  {Name: "Fast", Spec: PoolSpec{Driver: "dir", Path: "/srv/x", AllNodes: true}},
		"empty name":  {Name: "", Spec: PoolSpec{Driver: "dir", Path: "/srv/x", AllNodes: true}},
		"dot in name": {Name: "a.b", Spec: PoolSpec{Driver: "dir", Path: "/srv/x", AllNodes: true}},
	} {
		if _, err := BuildPool(req); codeOf(err) != "invalid_field" {
			t.Errorf("%s: %v, want invalid_field", name, err)
		}
	}
}

func TestPoolPatchApply(t *testing.T) {
	spec := PoolSpec{Driver: "dir", Path: "/srv/x", Nodes: []string{"a"}}
	yes := true
	if (PoolPatch{}).Apply(&spec) {
		t.Fatal("empty patch changed the spec")
	}
	same := []string{"a"}
	if (PoolPatch{Nodes: &same}).Apply(&spec) {
		t.Fatal("same nodes changed the spec")
	}
	if !(PoolPatch{AllNodes: &yes}).Apply(&spec) || !spec.AllNodes || spec.Nodes != nil {
		t.Fatalf("all_nodes: %+v", spec)
	}
}

func TestInsufficientStorageNamesNumbers(t *testing.T) {
	e := InsufficientStorage("fast", "n1", 2048, 1024)
	if e.Code != "insufficient_storage" || e.Details["pool"] != "fast" || e.Details["requested_bytes"] != int64(2048) ||
		e.Details["free_bytes"] != int64(1024) || e.Details["node"] != "n1" {
		t.Fatalf("%+v", e)
	}
	if e.Message != "pool fast on node n1 has 1024 bytes free; 2048 bytes were asked for" {
		t.Fatalf("message %q", e.Message)
	}
}

func TestValidateDesiredPool(t *testing.T) {
	good := DesiredPool{ID: NewID(), Name: "fast", Driver: "dir", Path: "/srv/fast"}
	if err := ValidateDesiredPool(good); err != nil {
		t.Fatal(err)
	}
	def := good
	def.Path = ""
	if err := ValidateDesiredPool(def); err != nil {
		t.Fatalf("default pool (empty path): %v", err)
	}
	for _, bad := range []DesiredPool{
		{ID: good.ID, Name: "../x", Driver: "dir", Path: "/srv/x"},
		{ID: "x/../y", Name: "x", Driver: "dir", Path: "/srv/x"},
		{ID: good.ID, Name: "x", Driver: "zfs", Path: "/srv/x"},
		{ID: good.ID, Name: "x", Driver: "dir", Path: "/srv/x/../../etc"},
	} {
		if ValidateDesiredPool(bad) == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
