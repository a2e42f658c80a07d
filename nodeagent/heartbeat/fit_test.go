package heartbeat

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/otherix/otherix/messages"
)

// bigNode is a node's observed state with vms VM observations (message of
// msgLen bytes each) and images cached images with 128-byte names (the
// longest a name may be), as one developer can cause by asking for many
// long-named images.
func bigNode(vms, images, msgLen int) messages.Heartbeat {
	now := time.Date(2026, 12, 7, 13, 38, 2, 123456789, time.UTC)
	hb := messages.Heartbeat{AgentVersion: "0.2.0", Endpoint: "https://198.51.100.7:7443", Arch: "amd64",
		Capacity:     messages.NodeCapacity{CPUs: 256, MemoryMiB: 2 << 20, KVM: true, KVMReason: "/dev/kvm booted a probe guest", Accelerator: "kvm"},
		QEMUVersions: []string{"QEMU emulator version 9.2.0 (Debian 1:9.2.0+ds-1)"},
		Pools:        []messages.PoolStatus{{Name: "default", Path: "/var/lib/otherix/pools/default", TotalBytes: 8 << 40, FreeBytes: 3 << 40}},
		Overlay: &messages.NodeOverlay{PublicKey: strings.Repeat("k", 43) + "=", Endpoint: "198.51.100.7:51820",
			WireGuard: "kernel", Reconciled: true},
		OverlayRevision: strings.Repeat("a", 64)}
	for i := range vms {
		started := now.Add(-time.Duration(i) * time.Minute)
		hb.VMs = append(hb.VMs, messages.VMObserved{ID: messages.NewID(), Phase: "running", ObservedGeneration: int64(10 + i%90),
			Pid: 1_000_000 + i, StartedAt: &started, Message: strings.Repeat("m", msgLen), ObservedAt: now})
	}
	for i := range images {
		name := fmt.Sprintf("%04d-", i) + strings.Repeat("x", 128-5-len(".qcow2")) + ".qcow2"
		hb.Images = append(hb.Images, messages.CachedImage{Pool: "default", Name: name, SizeBytes: 21_474_836_480 + int64(i),
			SHA256: strings.Repeat("0123456789abcdef", 4)})
	}
	return hb
}

func encodedLen(t *testing.T, v any) int {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

// TestHeartbeatSizes measures what one VM and one image add to a heartbeat
// and checks that 1,000 of each fit the control plane's limit with room to
// spare, in the typical case and with every VM carrying the longest message
// the agent sends. Before the limit had its own constant, 350 VMs or 260
// long-named images exceeded the agent listener's 64 KiB.
func TestHeartbeatSizes(t *testing.T) {
	empty := encodedLen(t, bigNode(0, 0, 0))
	perVM := float64(encodedLen(t, bigNode(1000, 0, 0))-empty) / 1000
	perVMWorst := float64(encodedLen(t, bigNode(1000, 0, MaxVMMessageBytes))-empty) / 1000
	perImage := float64(encodedLen(t, bigNode(0, 1000, 0))-empty) / 1000
	typical := encodedLen(t, bigNode(1000, 1000, 0))
	worst := encodedLen(t, bigNode(1000, 1000, MaxVMMessageBytes))
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	b, _ := json.Marshal(bigNode(1000, 1000, 0))
	_, _ = w.Write(b)
	_ = w.Close()
	t.Logf("fixed part %d B; per VM %.0f B (%.0f B with a %d-byte message); per 128-byte-named image %.0f B",
		empty, perVM, perVMWorst, MaxVMMessageBytes, perImage)
	t.Logf("1,000 VMs + 1,000 images: %d B typical (%d B gzipped), %d B worst; limit %d B",
		typical, gz.Len(), worst, messages.HeartbeatMaxBytes)
	if old := 64 << 10; typical <= old {
		t.Fatalf("the sizing premise is wrong: %d B would fit the old limit", typical)
	}
	if 2*worst > messages.HeartbeatMaxBytes {
		t.Fatalf("1,000 VMs and 1,000 images take %d B at worst: less than 2x headroom under %d", worst, messages.HeartbeatMaxBytes)
	}
	body, sent, err := (&Fitter{}).Encode(bigNode(1000, 1000, MaxVMMessageBytes))
	if err != nil || sent.OmittedVMs != 0 || sent.OmittedImages != 0 || len(body) != worst {
		t.Fatalf("1,000 VMs and 1,000 images were cut: %d B, omitted %d vms %d images, %v", len(body), sent.OmittedVMs, sent.OmittedImages, err)
	}
}

// TestFitterKeepsVMsOverImages: over the budget, images go first; the
// omissions are counted; the body is within the budget and decodes
// strictly into what Encode says it sent.
func TestFitterKeepsVMsOverImages(t *testing.T) {
	hb := bigNode(50, 200, 0)
	full := encodedLen(t, hb)
	vmsOnly := hb
	vmsOnly.Images = nil
	budget := encodedLen(t, vmsOnly) + 100*300 // every VM, about 100 images
	f := &Fitter{Budget: budget}
	body, sent, err := f.Encode(hb)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > budget || len(body) >= full {
		t.Fatalf("body %d B, budget %d, full %d", len(body), budget, full)
	}
	var got messages.Heartbeat
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got.VMs) != 50 || got.OmittedVMs != 0 {
		t.Fatalf("vms cut before images: %d sent, %d omitted", len(got.VMs), got.OmittedVMs)
	}
	if len(got.Images) == 0 || len(got.Images)+got.OmittedImages != 200 || got.OmittedImages != sent.OmittedImages {
		t.Fatalf("images: %d sent, %d omitted (Encode says %d)", len(got.Images), got.OmittedImages, sent.OmittedImages)
	}
	// The budget is used, not wasted: one more image would not fit.
	if budget-len(body) > encodedLen(t, hb.Images[0])+1 {
		t.Fatalf("%d B of budget left unused with images omitted", budget-len(body))
	}

	// Within the budget nothing changes and nothing is marked.
	small := bigNode(3, 3, 0)
	body, sent, err = (&Fitter{}).Encode(small)
	Normalize(&small)
	want, _ := json.Marshal(small)
	if err != nil || !bytes.Equal(body, want) || sent.OmittedVMs+sent.OmittedImages != 0 || bytes.Contains(body, []byte("omitted")) {
		t.Fatalf("small report changed: %s %v", body, err)
	}
}

// TestFitterRotatesVMs: when not even the VMs fit, successive beats report
// different VMs, so every VM's observation arrives within a few beats.
func TestFitterRotatesVMs(t *testing.T) {
	hb := bigNode(100, 10, 0)
	base := hb
	base.VMs, base.Images = nil, nil
	base.OmittedVMs, base.OmittedImages = 100, 10
	f := &Fitter{Budget: encodedLen(t, base) + 30*encodedLen(t, hb.VMs[0])}
	seen := map[string]bool{}
	for beat := range 4 {
		body, sent, err := f.Encode(hb)
		if err != nil {
			t.Fatal(err)
		}
		if len(body) > f.Budget || len(sent.Images) != 0 || sent.OmittedImages != 10 || len(sent.VMs)+sent.OmittedVMs != 100 {
			t.Fatalf("beat %d: %d B (budget %d), %d vms + %d omitted, %d images", beat, len(body), f.Budget, len(sent.VMs), sent.OmittedVMs, len(sent.Images))
		}
		for _, v := range sent.VMs {
			seen[v.ID] = true
		}
	}
	if len(seen) != 100 {
		t.Fatalf("four beats reported %d of 100 VMs", len(seen))
	}
}

// TestFitterCutsMessages: a VM message is cut to MaxVMMessageBytes on a
// rune boundary; a report whose fixed part exceeds the budget is an error.
func TestFitterCutsMessages(t *testing.T) {
	hb := bigNode(1, 0, 0)
	hb.VMs[0].Message = strings.Repeat("é", MaxVMMessageBytes) // 2 bytes each
	_, sent, err := (&Fitter{}).Encode(hb)
	if err != nil {
		t.Fatal(err)
	}
	m := sent.VMs[0].Message
	if len(m) > MaxVMMessageBytes || len(m) < MaxVMMessageBytes-1 || !utf8.ValidString(m) {
		t.Fatalf("message cut to %d bytes, valid %v", len(m), utf8.ValidString(m))
	}
	if hb.VMs[0].Message == m {
		t.Fatal("Encode changed the caller's VM slice")
	}
	if _, _, err := (&Fitter{Budget: 100}).Encode(hb); err == nil || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("fixed part over budget: %v", err)
	}
}

// TestLoopReadsALargeAnswer: the answer of a big cluster (20,000 FDB
// entries, 1.8 MB: more than the 1 MiB read before) is decoded; one over
// MaxResponseBytes is refused with an error that says so, not a truncated
// JSON error.
func TestLoopReadsALargeAnswer(t *testing.T) {
	fdb := make([]messages.DesiredFDBEntry, 20_000)
	for i := range fdb {
		fdb[i] = messages.DesiredFDBEntry{Network: "01jxyz0000000000000000000a", MAC: fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16, i>>8&0xff, i&0xff), Remote: "10.96.1.2"}
	}
	big := messages.HeartbeatResponse{IntervalSeconds: 30, Desired: messages.DesiredState{
		Overlay: &messages.DesiredOverlay{Revision: "r1", TunnelIP: "10.96.0.1", ListenPort: 51820, FDB: fdb}}}
	f := newFixture(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			_ = json.NewEncoder(w).Encode(big)
			return
		}
		_, _ = w.Write(bytes.Repeat([]byte(" "), MaxResponseBytes+1))
	})
	l := f.loop(&syncBuf{})
	resp, err := l.Beat(t.Context())
	if err != nil || resp.Desired.Overlay == nil || len(resp.Desired.Overlay.FDB) != len(fdb) {
		t.Fatalf("large answer: %v", err)
	}
	if _, err := l.Beat(t.Context()); err == nil || !strings.Contains(err.Error(), "answer larger than") {
		t.Fatalf("oversized answer: %v", err)
	}
}
