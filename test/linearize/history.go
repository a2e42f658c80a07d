package linearize

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// History records operations from concurrent clients. Times are offsets of
// one monotonic clock from the history's start.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

// NewHistory starts an empty history now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the history's clock: call it just before sending a request and
// just after its answer.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Add records one operation of client, called at call and answered at ret.
// An Unknown outcome is recorded as never returning (porcupine's
// convention for an operation that may still take effect at any later
// time), whatever ret says.
func (h *History) Add(client int, in Input, call int64, out Output, ret int64) {
	if out.Result == Unknown {
		ret = math.MaxInt64
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// AddList records a list answered with vms (name to VM) as one read of each
// of names, present or not.
func (h *History) AddList(client int, names []string, call int64, vms map[string]Output, ret int64) {
	for _, n := range names {
		out, ok := vms[n]
		if !ok {
			out = Output{Result: Missing}
		}
		h.Add(client, Input{Op: List, Name: n}, call, out, ret)
	}
}

// Operations returns a copy of what was recorded.
func (h *History) Operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// Counts tallies the recorded operations by op and result ("create ok").
func (h *History) Counts() map[string]int {
	c := map[string]int{}
	for _, op := range h.Operations() {
		c[op.Input.(Input).Op+" "+op.Output.(Output).Result]++
	}
	return c
}

// Check checks ops against Model within timeout. When they are not
// linearizable, or the checker ran out of time, it writes porcupine's
// visualization (an HTML file) into dir and returns an error naming it.
func Check(ops []porcupine.Operation, timeout time.Duration, dir string) error {
	res, info := porcupine.CheckOperationsVerbose(Model, ops, timeout)
	if res == porcupine.Ok {
		return nil
	}
	path := filepath.Join(dir, "linearizability.html")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("history of %d operations is %s; visualization not written: %v", len(ops), res, err)
	}
	if err := porcupine.VisualizePath(Model, info, path); err != nil {
		return fmt.Errorf("history of %d operations is %s; visualization not written: %v", len(ops), res, err)
	}
	if res == porcupine.Unknown {
		return fmt.Errorf("the checker did not decide within %s (%d operations); partial linearizations in %s", timeout, len(ops), path)
	}
	return fmt.Errorf("history of %d operations is not linearizable; visualization: %s", len(ops), path)
}
