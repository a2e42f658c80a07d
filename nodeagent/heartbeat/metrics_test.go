package heartbeat

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

// sample is a VM's metrics with drives drives and nics NICs, at large
// values (every digit counts in a size).
func sample(cpu float64, drives, nics int) messages.VMMetrics {
	big := int64(math.MaxInt64 / 3)
	b := big
	m := messages.VMMetrics{ID: messages.NewID(), Name: "a-vm-name-of-some-length-012345678901234567",
		SampledAt: time.Date(2026, 12, 7, 13, 38, 2, 123456789, time.UTC), WindowSeconds: 10.000123,
		VCPUs: 64, CPUSeconds: 123456789.123, CPUPercent: cpu, RSSBytes: big, BalloonBytes: &b}
	for i := range drives {
		m.Drives = append(m.Drives, messages.DriveMetrics{Device: fmt.Sprintf("disk%d", i), ReadBytes: big, WriteBytes: big,
			ReadOps: big, WriteOps: big, ReadBytesPerSec: 1.2345e9, WriteBytesPerSec: 1.2345e9, ReadOpsPerSec: 12345.6, WriteOpsPerSec: 12345.6})
	}
	for i := range nics {
		m.NICs = append(m.NICs, messages.NICMetrics{Device: fmt.Sprintf("oxt%08x", i), RXBytes: big, TXBytes: big,
			RXPackets: big, TXPackets: big, RXBytesPerSec: 1.2345e9, TXBytesPerSec: 1.2345e9})
	}
	return m
}

// TestMetricsSizes measures a VM's sample and checks that a report at the
// caps (MaxMetricsVMs VMs of MaxMetricsDrives drives and MaxMetricsNICs
// NICs) fits the body limit beside 1,000 VM observations and images, so
// the caps, not the budget, are what bounds metrics in practice.
func TestMetricsSizes(t *testing.T) {
	one := encodedLen(t, sample(1, 1, 1))
	most := encodedLen(t, sample(1, messages.MaxMetricsDrives, messages.MaxMetricsNICs))
	hb := bigNode(1000, 1000, MaxVMMessageBytes)
	for range messages.MaxMetricsVMs {
		hb.VMMetrics = append(hb.VMMetrics, sample(1, messages.MaxMetricsDrives, messages.MaxMetricsNICs))
	}
	total := encodedLen(t, hb)
	t.Logf("one VM sample: %d B with a drive and a NIC, %d B at %d drives and %d NICs; a report at every cap: %d B of %d",
		one, most, messages.MaxMetricsDrives, messages.MaxMetricsNICs, total, messages.HeartbeatMaxBytes)
	if total > messages.HeartbeatMaxBytes {
		t.Fatalf("a report at the caps is %d B, over the %d-byte limit", total, messages.HeartbeatMaxBytes)
	}
	_, sent, err := (&Fitter{}).Encode(hb)
	if err != nil || sent.OmittedVMMetrics != 0 || len(sent.VMMetrics) != messages.MaxMetricsVMs {
		t.Fatalf("sent %d samples, omitted %d, %v", len(sent.VMMetrics), sent.OmittedVMMetrics, err)
	}
}

// TestFitCapsMetrics: samples beyond the caps are cut and counted, keeping
// the first ones (the agent sorts them busiest first).
func TestFitCapsMetrics(t *testing.T) {
	hb := bigNode(1, 0, 0)
	for i := range messages.MaxMetricsVMs + 7 {
		hb.VMMetrics = append(hb.VMMetrics, sample(float64(10000-i), messages.MaxMetricsDrives+2, messages.MaxMetricsNICs+3))
	}
	body, sent, err := (&Fitter{}).Encode(hb)
	if err != nil {
		t.Fatal(err)
	}
	if len(sent.VMMetrics) != messages.MaxMetricsVMs || sent.OmittedVMMetrics != 7 {
		t.Fatalf("sent %d samples, omitted %d; want %d and 7", len(sent.VMMetrics), sent.OmittedVMMetrics, messages.MaxMetricsVMs)
	}
	if sent.VMMetrics[0].CPUPercent != 10000 || sent.VMMetrics[len(sent.VMMetrics)-1].CPUPercent != float64(10000-messages.MaxMetricsVMs+1) {
		t.Fatal("the busiest samples were not the ones kept")
	}
	var got messages.Heartbeat
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	for _, m := range got.VMMetrics {
		if len(m.Drives) != messages.MaxMetricsDrives || len(m.NICs) != messages.MaxMetricsNICs {
			t.Fatalf("a sample has %d drives and %d nics", len(m.Drives), len(m.NICs))
		}
	}
	// The caller's heartbeat is not changed.
	if len(hb.VMMetrics[0].Drives) != messages.MaxMetricsDrives+2 {
		t.Fatal("Encode changed its argument's samples")
	}
}

// TestFitDropsMetricsFirst: over the budget, metrics go before images and
// VM observations, the least busy first, and are counted; the report is
// never refused for them.
func TestFitDropsMetricsFirst(t *testing.T) {
	hb := bigNode(20, 20, 0)
	for i := range 100 {
		hb.VMMetrics = append(hb.VMMetrics, sample(float64(1000-i), 2, 1))
	}
	withoutMetrics := hb
	withoutMetrics.VMMetrics = nil
	budget := encodedLen(t, withoutMetrics) + 20*encodedLen(t, hb.VMMetrics[0])
	f := &Fitter{Budget: budget}
	body, sent, err := f.Encode(hb)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > budget {
		t.Fatalf("%d B over the %d-byte budget", len(body), budget)
	}
	if sent.OmittedVMs != 0 || sent.OmittedImages != 0 {
		t.Fatalf("dropped %d VMs and %d images before metrics", sent.OmittedVMs, sent.OmittedImages)
	}
	if n := len(sent.VMMetrics); n == 0 || n >= 100 || sent.OmittedVMMetrics != 100-n {
		t.Fatalf("sent %d samples, omitted %d", n, sent.OmittedVMMetrics)
	}
	if sent.VMMetrics[0].CPUPercent != 1000 {
		t.Fatal("the busiest sample was dropped")
	}
	// With too little room for every image, no metrics go at all.
	f = &Fitter{Budget: encodedLen(t, withoutMetrics) - 2000}
	_, sent, err = f.Encode(hb)
	if err != nil || len(sent.VMMetrics) != 0 || sent.OmittedVMMetrics != 100 || sent.OmittedImages == 0 {
		t.Fatalf("sent %d samples (omitted %d) with %d images omitted: %v", len(sent.VMMetrics), sent.OmittedVMMetrics, sent.OmittedImages, err)
	}
}
