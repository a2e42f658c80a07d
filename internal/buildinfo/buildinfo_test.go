package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	vcs := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
		}}, true
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	tests := []struct {
		name                string
		v, c, d             string
		read                func() (*debug.BuildInfo, bool)
		wantV, wantC, wantD string
	}{
		{"stamped wins over vcs", "1.2.3", "deadbeef", "2026-12-07T00:00:00Z", vcs, "1.2.3", "deadbeef", "2026-12-07T00:00:00Z"},
		{"unstamped takes vcs", "", "", "", vcs, DevVersion, "abc123", "2026-12-01T10:00:00Z"},
		{"nothing known", "", "", "", none, DevVersion, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := resolve(tt.v, tt.c, tt.d, tt.read)
			if got.Version != tt.wantV || got.Commit != tt.wantC || got.Date != tt.wantD {
				t.Errorf("resolve = %+v, want version %q commit %q date %q", got, tt.wantV, tt.wantC, tt.wantD)
			}
			if got.GoVersion == "" || got.Platform == "" {
				t.Errorf("resolve = %+v: Go version and platform must always be known", got)
			}
		})
	}
}
