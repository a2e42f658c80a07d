package vmactor

import (
	"errors"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/console"
)

func errCode(err error) string {
	var e *messages.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func waitSessionClosed(t *testing.T, s *console.Session, code int) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("console session not closed, want code %d", code)
	}
	if err := s.Err(); err == nil || err.Code != code {
		t.Fatalf("console closed with %v, want code %d", err, code)
	}
}

// The console follows QEMU: attachable while it runs, across an agent
// restart (re-adoption re-attaches the serial socket), and closed with
// ConsoleVMStopped when QEMU ends.
func TestConsoleWithRealQEMU(t *testing.T) {
	f := newFixture(t)
	vm := f.newVM("con-1")
	if _, err := f.m.Console(vm.ID, messages.ConsoleReadOnly, false); errCode(err) != "vm_not_found" {
		t.Fatalf("console of an unknown vm: %v", err)
	}
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm)))

	first, err := f.m.Console(vm.ID, messages.ConsoleInteractive, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Write([]byte("\r\n")); err != nil {
		t.Fatalf("type into the serial line: %v", err)
	}
	if _, err := f.m.Console(vm.ID, messages.ConsoleInteractive, false); errCode(err) != "console_busy" {
		t.Fatalf("second interactive: %v, want console_busy", err)
	}
	ro, err := f.m.Console(vm.ID, messages.ConsoleReadOnly, false)
	if err != nil {
		t.Fatalf("read-only next to a writer: %v", err)
	}

	// Agent restart: sessions are told the agent went away; QEMU runs on and
	// the next agent's console works.
	closeManager(t, f.m)
	waitSessionClosed(t, first, messages.ConsoleAgentGone)
	waitSessionClosed(t, ro, messages.ConsoleAgentGone)
	f.start()
	var s *console.Session
	// The actor re-adopts QEMU asynchronously.
	testutil.Until(30*time.Second, 20*time.Millisecond, func() bool {
		s, err = f.m.Console(vm.ID, messages.ConsoleInteractive, false)
		return err == nil
	})
	if err != nil {
		t.Fatalf("console after agent restart: %v", err)
	}

	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMPoweroff, vm)))
	waitSessionClosed(t, s, messages.ConsoleVMStopped)
	if _, err := f.m.Console(vm.ID, messages.ConsoleReadOnly, false); errCode(err) != "vm_not_running" {
		t.Fatalf("console of a stopped vm: %v, want vm_not_running", err)
	}
	req := vmReq(messages.NewID(), messages.TaskVMDelete, vm)
	mustSucceed(t, f.run(t, req))
}
