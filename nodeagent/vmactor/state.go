package vmactor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/otherix/otherix/messages"

	"github.com/otherix/otherix/internal/atomicfile"
)

// recordFile is a VM's state on the node's disk, inside its state dir.
const recordFile = "vm.json"

// record is what the agent keeps of one VM across restarts: what to run
// (spec, generation) and what it last knew of it. The live truth of a
// running VM is QEMU itself, found again through the pid file and QMP.
type record struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Generation int64           `json:"generation"`
	Spec       messages.VMSpec `json:"spec"`
	Phase      string          `json:"phase"`
	Pid        int             `json:"pid,omitempty"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	Message    string          `json:"message,omitempty"`
	Disk       string          `json:"disk"`
	Seed       string          `json:"seed,omitempty"`
	// Base and BaseFormat are Disk's backing image, recorded when the
	// agent made Disk: QEMU is told them rather than reading them from
	// Disk's header, which QEMU itself can rewrite.
	Base       string `json:"base,omitempty"`
	BaseFormat string `json:"base_format,omitempty"`
	// NICs are the VM's allocated NICs, as the create task carried them.
	NICs []messages.NICStatus `json:"nics,omitempty"`
	// Taps are the host devices of NICs, as the data plane named them at
	// the last start: the VM's traffic counters are read from them.
	Taps      []string  `json:"taps,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Step is the step a create is in while Phase is creating; a record
	// left so by a crash is rolled back from it (rollBack). Records of
	// agents before steps lack it, and roll back every step.
	Step string `json:"step,omitempty"`
	// Reason is set when QEMU or the guest changed Phase on its own
	// (messages.VMObserved.Reason).
	Reason string `json:"reason,omitempty"`
}

// loadRecord reads dir's record; a missing one is (nil, nil).
func loadRecord(dir string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("vm state %s: %w", filepath.Join(dir, recordFile), err)
	}
	return &r, nil
}

// save writes the record atomically: a crash leaves the old or the new one,
// never a torn file that would orphan a running QEMU.
func (r *record) save(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, recordFile), append(b, '\n'), 0o600)
}

// observed is the record as the control plane sees it.
func (r *record) observed(now time.Time) messages.VMObserved {
	return messages.VMObserved{
		ID:                 r.ID,
		Phase:              r.Phase,
		ObservedGeneration: r.Generation,
		Pid:                r.Pid,
		StartedAt:          r.StartedAt,
		Message:            r.Message,
		Reason:             r.Reason,
		ObservedAt:         now.UTC(),
	}
}
