package messages

import (
	"errors"
	"strings"
	"testing"
)

func TestQuotaAdmit(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	q := &Quota{VMs: n(2), CPUs: n(4), DiskGiB: n(0)}
	used := Usage{VMs: 2, CPUs: 5, MemoryMiB: 1 << 20, DiskGiB: 30}
	for _, tc := range []struct {
		name     string
		q        *Quota
		delta    Usage
		resource string // "" admits
	}{
		{"no quota", nil, Usage{VMs: 100}, ""},
		{"vms", q, Usage{VMs: 1}, "vms"},
		{"over a lowered limit, shrinking", q, Usage{CPUs: -1, DiskGiB: -10}, ""},
		{"over a lowered limit, growing", q, Usage{CPUs: 1}, "cpus"},
		{"memory unlimited", q, Usage{MemoryMiB: 1 << 30}, ""},
		{"zero allows none", &Quota{DiskGiB: n(0)}, Usage{DiskGiB: 1}, "disk_gib"},
		{"exactly the limit", &Quota{VMs: n(3)}, Usage{VMs: 1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.q.Admit(used, tc.delta)
			if tc.resource == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeQuotaExceeded || e.Kind != KindUnprocessable || e.Details["resource"] != tc.resource {
				t.Fatalf("got %v, want quota_exceeded on %s", err, tc.resource)
			}
		})
	}
}

// TestImageNameRules: the names the node's image cache refuses are refused
// by the shared check, and the API's spec check uses it.
func TestImageNameRules(t *testing.T) {
	for name, ok := range map[string]bool{
		"debian-12.qcow2": true, strings.Repeat("x", MaxImageNameLength): true, "a b+c.img": true,
		"": false, ".": false, "..": false, ".hidden": false, strings.Repeat("x", MaxImageNameLength+1): false,
		"a\x00b": false, "a/b": false, `a\b`: false, "a\nb": false, "a\x7fb": false, "\xff\xfe": false,
	} {
		if err := ValidateImageName(name); (err == nil) != ok {
			t.Errorf("ValidateImageName(%q) = %v, want ok %v", name, err, ok)
		}
	}
	spec := func(url string, cpus int) VMSpec { return VMSpec{Image: ImageSource{URL: url}, CPUs: cpus} }
	if _, err := PrepareVMCreate("web", spec("https://h/%2E.x", 1)); err == nil {
		t.Error("an escaped leading dot passed")
	}
	if _, err := PrepareVMCreate("web", spec("https://h/x.img", MaxCPUs+1)); err == nil {
		t.Error("MaxCPUs+1 passed")
	}
	got, err := PrepareVMCreate("web", spec("https://h/x.img", 0))
	if err != nil || got.CPUs != 1 || got.PowerState != PowerRunning {
		t.Errorf("defaults: %+v %v", got, err)
	}
}
