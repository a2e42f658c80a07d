package messages

import (
	"math"
	"time"
)

// Bounds of the per-VM metrics a heartbeat carries. The agent keeps the
// busiest VMs (by CPU) when it has more; the control plane cuts a report
// that exceeds them rather than refusing the heartbeat. At these bounds the
// samples take at most about 2.1 MB (measured in nodeagent/heartbeat
// TestMetricsSizes with every number at its widest: ~790 bytes for a VM
// with one drive and one NIC, ~4.2 KB at eight of each), and a report at
// every cap with 1,000 VM observations and images is 3.1 MB, inside
// HeartbeatMaxBytes; the Fitter drops metrics before anything else when a
// report does not fit.
const (
	// MaxMetricsVMs bounds the VM samples of one heartbeat.
	MaxMetricsVMs = 512
	// MaxMetricsDrives and MaxMetricsNICs bound one VM's devices.
	MaxMetricsDrives = 8
	MaxMetricsNICs   = 8
	// MaxMetricsDeviceName bounds a drive or NIC name: they are the agent's
	// own names (QEMU node names such as disk0, tap names), never a user's.
	MaxMetricsDeviceName = 32
)

// VMMetrics is one running VM's latest sample on its node. Counters are
// totals since QEMU started; rates (per second) come from the agent's last
// two samples, WindowSeconds apart, and are absent after the first sample.
type VMMetrics struct {
	ID string `json:"id"`
	// Name is the VM's name as the agent knows it (for its own Prometheus
	// labels); the control plane shows the name of the VM's row instead.
	Name      string    `json:"name,omitempty"`
	SampledAt time.Time `json:"sampled_at"`
	// WindowSeconds is the time between the two samples the rates are
	// computed from; 0 when there is only one sample so far.
	WindowSeconds float64 `json:"window_seconds,omitempty"`
	VCPUs         int     `json:"vcpus"`
	// CPUSeconds is the time QEMU's vCPU threads ran (user + system).
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUPercent is the vCPU threads' CPU use over the window, 100 per
	// host CPU kept busy (so up to 100 × VCPUs).
	CPUPercent float64 `json:"cpu_percent"`
	// RSSBytes is the resident memory of the QEMU process.
	RSSBytes int64 `json:"rss_bytes"`
	// BalloonBytes is the guest memory the balloon device reports
	// (query-balloon "actual"); absent when the VM has no balloon device,
	// which is the case of every VM Otherix starts today.
	BalloonBytes *int64         `json:"balloon_bytes,omitempty"`
	Drives       []DriveMetrics `json:"drives,omitempty"`
	NICs         []NICMetrics   `json:"nics,omitempty"`
}

// DriveMetrics is one virtual disk's I/O as QEMU counts it (query-blockstats).
type DriveMetrics struct {
	// Device is QEMU's node name of the drive: disk0 (the VM's disk) or
	// seed0 (its cloud-init seed).
	Device     string `json:"device"`
	ReadBytes  int64  `json:"read_bytes"`
	WriteBytes int64  `json:"write_bytes"`
	ReadOps    int64  `json:"read_ops"`
	WriteOps   int64  `json:"write_ops"`
	// Rates over the window.
	ReadBytesPerSec  float64 `json:"read_bytes_per_sec,omitempty"`
	WriteBytesPerSec float64 `json:"write_bytes_per_sec,omitempty"`
	ReadOpsPerSec    float64 `json:"read_ops_per_sec,omitempty"`
	WriteOpsPerSec   float64 `json:"write_ops_per_sec,omitempty"`
}

// NICMetrics is one NIC's traffic, counted by the host on its tap and told
// from the guest's side: RX is what the guest received.
type NICMetrics struct {
	// Device is the tap's name on the host (oxt…).
	Device    string `json:"device"`
	RXBytes   int64  `json:"rx_bytes"`
	TXBytes   int64  `json:"tx_bytes"`
	RXPackets int64  `json:"rx_packets"`
	TXPackets int64  `json:"tx_packets"`
	// Rates over the window.
	RXBytesPerSec float64 `json:"rx_bytes_per_sec,omitempty"`
	TXBytesPerSec float64 `json:"tx_bytes_per_sec,omitempty"`
}

// DiskBytesPerSec is the VM's read plus write rate over all drives.
func (m VMMetrics) DiskBytesPerSec() float64 {
	var s float64
	for _, d := range m.Drives {
		s += d.ReadBytesPerSec + d.WriteBytesPerSec
	}
	return s
}

// NetBytesPerSec is the VM's receive plus transmit rate over all NICs.
func (m VMMetrics) NetBytesPerSec() float64 {
	var s float64
	for _, n := range m.NICs {
		s += n.RXBytesPerSec + n.TXBytesPerSec
	}
	return s
}

// SanitizeVMMetrics is what the control plane keeps of a reported list: at
// most MaxMetricsVMs samples with a valid VM id and at most
// MaxMetricsDrives drives and MaxMetricsNICs NICs each, without devices
// whose name is empty or too long, and without negative or non-finite
// numbers. It never fails: metrics inform, and a node is never refused a
// heartbeat for them.
func SanitizeVMMetrics(in []VMMetrics) []VMMetrics {
	if len(in) == 0 {
		return nil
	}
	out := make([]VMMetrics, 0, min(len(in), MaxMetricsVMs))
	for _, m := range in {
		if len(out) == MaxMetricsVMs {
			break
		}
		if !ValidID(m.ID) {
			continue
		}
		// The VM's row names it; a name from the node is not kept.
		m.Name = ""
		m.VCPUs = max(m.VCPUs, 0)
		m.WindowSeconds, m.CPUSeconds, m.CPUPercent = nonNeg(m.WindowSeconds), nonNeg(m.CPUSeconds), nonNeg(m.CPUPercent)
		m.RSSBytes = max(m.RSSBytes, 0)
		if m.BalloonBytes != nil {
			b := max(*m.BalloonBytes, 0)
			m.BalloonBytes = &b
		}
		var drives []DriveMetrics
		for _, d := range m.Drives {
			if len(drives) == MaxMetricsDrives {
				break
			}
			if d.Device == "" || len(d.Device) > MaxMetricsDeviceName {
				continue
			}
			d.ReadBytes, d.WriteBytes, d.ReadOps, d.WriteOps = max(d.ReadBytes, 0), max(d.WriteBytes, 0), max(d.ReadOps, 0), max(d.WriteOps, 0)
			d.ReadBytesPerSec, d.WriteBytesPerSec = nonNeg(d.ReadBytesPerSec), nonNeg(d.WriteBytesPerSec)
			d.ReadOpsPerSec, d.WriteOpsPerSec = nonNeg(d.ReadOpsPerSec), nonNeg(d.WriteOpsPerSec)
			drives = append(drives, d)
		}
		m.Drives = drives
		var nics []NICMetrics
		for _, n := range m.NICs {
			if len(nics) == MaxMetricsNICs {
				break
			}
			if n.Device == "" || len(n.Device) > MaxMetricsDeviceName {
				continue
			}
			n.RXBytes, n.TXBytes, n.RXPackets, n.TXPackets = max(n.RXBytes, 0), max(n.TXBytes, 0), max(n.RXPackets, 0), max(n.TXPackets, 0)
			n.RXBytesPerSec, n.TXBytesPerSec = nonNeg(n.RXBytesPerSec), nonNeg(n.TXBytesPerSec)
			nics = append(nics, n)
		}
		m.NICs = nics
		out = append(out, m)
	}
	return out
}

func nonNeg(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0
	}
	return f
}

// VMMetricsView is one VM's latest sample as the API answers it
// (GET /v1/vms/{id}/metrics, and the items of GET /v1/top/vms). Metrics is
// absent when the VM runs nowhere or its node has not reported a sample to
// the replica that answers.
type VMMetricsView struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Node string `json:"node,omitempty"`
	// ReceivedAt is when the heartbeat carrying the sample arrived.
	ReceivedAt *time.Time `json:"received_at,omitempty"`
	Metrics    *VMMetrics `json:"metrics,omitempty"`
}

// NodeTop is one node's load from its VMs' latest samples, as
// GET /v1/top/nodes answers it.
type NodeTop struct {
	Name  string `json:"name"`
	Phase string `json:"phase"`
	// CPUs and MemoryMiB are the node's capacity.
	CPUs      int   `json:"cpus"`
	MemoryMiB int64 `json:"memory_mib"`
	// VMs counts the VMs sampled; CPUPercent, RSSBytes and the rates sum
	// over them (CPUPercent: 100 per host CPU kept busy).
	VMs              int        `json:"vms"`
	CPUPercent       float64    `json:"cpu_percent"`
	RSSBytes         int64      `json:"rss_bytes"`
	DiskBytesPerSec  float64    `json:"disk_bytes_per_sec"`
	NetBytesPerSec   float64    `json:"net_bytes_per_sec"`
	ReceivedAt       *time.Time `json:"received_at,omitempty"`
	OmittedVMMetrics int        `json:"omitted_vm_metrics,omitempty"`
}
