package heartbeat

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/otherix/otherix/messages"
)

// MaxVMMessageBytes bounds one VM observation's message. A message is an
// error or a progress note the agent wrote, but it can quote what a user
// controls (an image URL, a download's error), and without a bound a few
// long ones would crowd out other VMs' observations.
const MaxVMMessageBytes = 512

// Fitter encodes heartbeats within a byte budget. What a node must always
// report (identity, capacity, pools, overlay) goes whole; then as many VM
// observations as fit, because they drive the VMs' status and the node's
// place in scheduling; then cached images, which only inform; then VM
// metrics, busiest VM first, which are replaced by the next sample anyway.
// What does not fit is counted in OmittedVMs, OmittedImages and
// OmittedVMMetrics, so the control plane knows the report is partial. When even the VMs do not all fit, successive beats
// start at a rotating offset, so every VM is reported within a few beats
// instead of the same ones never.
//
// A Fitter is not safe for concurrent use; the Loop calls it from Run only.
type Fitter struct {
	// Budget is the largest body to send; 0 means messages.HeartbeatMaxBytes.
	Budget int
	// next is where the VM rotation starts at the next over-budget beat.
	next int
}

// Encode returns hb's JSON within the budget and the heartbeat it encodes
// (with omitted items removed and counted). hb is normalised first (nil
// slices become empty) and its VM messages are cut to MaxVMMessageBytes.
// It fails only when the parts that always go exceed the budget.
func (f *Fitter) Encode(hb messages.Heartbeat) ([]byte, messages.Heartbeat, error) {
	budget := f.Budget
	if budget <= 0 {
		budget = messages.HeartbeatMaxBytes
	}
	Normalize(&hb)
	vms := make([]messages.VMObserved, len(hb.VMs))
	for i, v := range hb.VMs {
		v.Message = truncateUTF8(v.Message, MaxVMMessageBytes)
		vms[i] = v
	}
	hb.VMs = vms
	capMetrics(&hb)
	body, err := json.Marshal(hb)
	if err != nil {
		return nil, hb, fmt.Errorf("heartbeat: encode: %w", err)
	}
	if len(body) <= budget {
		return body, hb, nil
	}

	// Over budget: measure the fixed part with empty lists and the
	// omission counts at their largest (the counts' digits count too),
	// then each item once.
	all := hb
	base := hb
	base.VMs, base.Images, base.VMMetrics = []messages.VMObserved{}, []messages.CachedImage{}, nil
	base.OmittedVMs, base.OmittedImages = len(all.VMs), len(all.Images)
	base.OmittedVMMetrics = all.OmittedVMMetrics + len(all.VMMetrics)
	fixed, err := json.Marshal(base)
	if err != nil {
		return nil, hb, fmt.Errorf("heartbeat: encode: %w", err)
	}
	left := budget - len(fixed)
	if left < 0 {
		return nil, hb, fmt.Errorf("heartbeat: %d bytes without any vm or image, over the %d-byte budget", len(fixed), budget)
	}
	// take returns how many of sizes fit in left, in order; each item
	// after the first costs a comma.
	take := func(sizes []int) int {
		n := 0
		for i, s := range sizes {
			if i > 0 {
				s++
			}
			if s > left {
				break
			}
			left -= s
			n++
		}
		return n
	}
	vmSizes := make([]int, len(all.VMs))
	for i, v := range all.VMs {
		b, _ := json.Marshal(v)
		vmSizes[i] = len(b)
	}
	start := 0
	if len(all.VMs) > 0 {
		start = f.next % len(all.VMs)
	}
	order := append(append([]int(nil), vmSizes[start:]...), vmSizes[:start]...)
	nvm := take(order)
	base.VMs = make([]messages.VMObserved, 0, nvm)
	for i := range nvm {
		base.VMs = append(base.VMs, all.VMs[(start+i)%len(all.VMs)])
	}
	if nvm < len(all.VMs) {
		f.next = start + nvm
		base.Images = []messages.CachedImage{}
	} else {
		f.next = 0
		imgSizes := make([]int, len(all.Images))
		for i, im := range all.Images {
			b, _ := json.Marshal(im)
			imgSizes[i] = len(b)
		}
		base.Images = all.Images[:take(imgSizes)]
		if len(base.Images) == len(all.Images) {
			metSizes := make([]int, len(all.VMMetrics))
			for i, m := range all.VMMetrics {
				b, _ := json.Marshal(m)
				metSizes[i] = len(b)
			}
			if n := take(metSizes); n > 0 {
				base.VMMetrics = all.VMMetrics[:n]
			}
		}
	}
	base.OmittedVMs = len(all.VMs) - len(base.VMs)
	base.OmittedImages = len(all.Images) - len(base.Images)
	base.OmittedVMMetrics = all.OmittedVMMetrics + len(all.VMMetrics) - len(base.VMMetrics)
	body, err = json.Marshal(base)
	if err != nil {
		return nil, hb, fmt.Errorf("heartbeat: encode: %w", err)
	}
	if len(body) > budget {
		// The arithmetic above is exact; this guards against a change to
		// the message types breaking it silently.
		return nil, base, fmt.Errorf("heartbeat: fitted report is %d bytes, over the %d-byte budget", len(body), budget)
	}
	return body, base, nil
}

// truncateUTF8 cuts s to at most n bytes on a rune boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// capMetrics keeps hb's VM metrics within messages.MaxMetricsVMs samples
// (the first ones: the agent sorts them busiest first) of at most
// MaxMetricsDrives drives and MaxMetricsNICs NICs each, and counts the
// samples left out.
func capMetrics(hb *messages.Heartbeat) {
	in := hb.VMMetrics
	if len(in) > messages.MaxMetricsVMs {
		hb.OmittedVMMetrics += len(in) - messages.MaxMetricsVMs
		in = in[:messages.MaxMetricsVMs]
	}
	if len(in) == 0 {
		hb.VMMetrics = nil
		return
	}
	out := make([]messages.VMMetrics, len(in))
	for i, m := range in {
		if len(m.Drives) > messages.MaxMetricsDrives {
			m.Drives = m.Drives[:messages.MaxMetricsDrives]
		}
		if len(m.NICs) > messages.MaxMetricsNICs {
			m.NICs = m.NICs[:messages.MaxMetricsNICs]
		}
		out[i] = m
	}
	hb.VMMetrics = out
}
