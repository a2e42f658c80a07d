package messages

import (
	"math"
	"strings"
	"testing"
)

// TestSanitizeVMMetrics: what a node reports is cut to the caps and cleaned,
// never refused.
func TestSanitizeVMMetrics(t *testing.T) {
	id := NewID()
	neg := int64(-5)
	in := []VMMetrics{
		{ID: "not an id"},
		{ID: id, Name: "user-chosen", CPUPercent: math.Inf(1), RSSBytes: -1, BalloonBytes: &neg,
			Drives: append([]DriveMetrics{{Device: ""}, {Device: strings.Repeat("d", MaxMetricsDeviceName+1)}},
				make([]DriveMetrics, MaxMetricsDrives+3)...),
			NICs: make([]NICMetrics, MaxMetricsNICs+3)},
	}
	for i := range in[1].Drives[2:] {
		in[1].Drives[2+i].Device = "disk" + string(rune('a'+i))
		in[1].Drives[2+i].ReadBytes = -1
	}
	for i := range in[1].NICs {
		in[1].NICs[i].Device = "oxt" + string(rune('a'+i))
	}
	out := SanitizeVMMetrics(in)
	if len(out) != 1 || out[0].ID != id {
		t.Fatalf("kept %d samples, want only the one with a valid id", len(out))
	}
	m := out[0]
	if m.Name != "" || m.CPUPercent != 0 || m.RSSBytes != 0 || *m.BalloonBytes != 0 {
		t.Fatalf("not cleaned: %+v", m)
	}
	if len(m.Drives) != MaxMetricsDrives || m.Drives[0].Device != "diska" || m.Drives[0].ReadBytes != 0 {
		t.Fatalf("drives = %+v", m.Drives)
	}
	if len(m.NICs) != MaxMetricsNICs {
		t.Fatalf("%d nics kept, want %d", len(m.NICs), MaxMetricsNICs)
	}
	many := make([]VMMetrics, MaxMetricsVMs+10)
	for i := range many {
		many[i].ID = NewID()
	}
	if got := len(SanitizeVMMetrics(many)); got != MaxMetricsVMs {
		t.Fatalf("kept %d samples, want %d", got, MaxMetricsVMs)
	}
}
