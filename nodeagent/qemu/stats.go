package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// The statistics queries are decoded into our own small types rather than
// go-qemu's bindings: those lack query-cpus-fast, and a binding generated
// from another QEMU's schema would fail on a field whose shape changed.

// VCPU is one virtual CPU and the host thread that runs it.
type VCPU struct {
	Index    int `json:"cpu-index"`
	ThreadID int `json:"thread-id"`
}

// VCPUs runs query-cpus-fast (which, unlike query-cpus, does not interrupt
// the vCPUs): the host threads whose CPU time is the guest's.
func (m *Monitor) VCPUs(ctx context.Context) ([]VCPU, error) {
	var out []VCPU
	if err := m.query(ctx, "query-cpus-fast", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// BlockStat is one drive's I/O counters.
type BlockStat struct {
	// NodeName is the drive's block node (disk0, seed0: the names the argv
	// gives); a drive made with -drive has a device name instead.
	NodeName string `json:"node-name"`
	Device   string `json:"device"`
	Stats    struct {
		ReadBytes  int64 `json:"rd_bytes"`
		WriteBytes int64 `json:"wr_bytes"`
		ReadOps    int64 `json:"rd_operations"`
		WriteOps   int64 `json:"wr_operations"`
	} `json:"stats"`
}

// BlockStats runs query-blockstats for the VM's drives (its block
// backends, not every node of their graphs).
func (m *Monitor) BlockStats(ctx context.Context) ([]BlockStat, error) {
	var out []BlockStat
	if err := m.query(ctx, "query-blockstats", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// ErrNoBalloon is Balloon's answer for a VM without a balloon device.
var ErrNoBalloon = errors.New("qemu: no balloon device")

// Balloon runs query-balloon: the guest memory in bytes as the balloon
// driver reports it, or ErrNoBalloon.
func (m *Monitor) Balloon(ctx context.Context) (int64, error) {
	var out struct {
		Actual int64 `json:"actual"`
	}
	err := m.query(ctx, "query-balloon", &out)
	var qe *QMPError
	if errors.As(err, &qe) && qe.Class == "DeviceNotActive" {
		return 0, ErrNoBalloon
	}
	if err != nil {
		return 0, err
	}
	return out.Actual, nil
}

// query runs an argument-less command and decodes its return value.
func (m *Monitor) query(ctx context.Context, name string, into any) error {
	cmd := map[string]json.RawMessage{"execute": json.RawMessage(`"` + name + `"`)}
	ret, err := m.run(ctx, name, cmd)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(ret, into); err != nil {
		return fmt.Errorf("qemu: qmp %s: decode: %w", name, err)
	}
	return nil
}
