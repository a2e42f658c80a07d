//go:build e2e

package vmactor

import (
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/test/guest"
)

// TestConsoleShellOfTheTestGuest boots the real test guest through the
// manager, attaches an interactive console, waits for the boot marker and
// uses the guest's shell on ttyS0.
func TestConsoleShellOfTheTestGuest(t *testing.T) {
	needQEMU(t)
	img := guest.Image(t)
	body, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.MkdirTemp("", "vme")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	f := newFixtureServing(t, base, body)
	vm := f.newVM("shell")
	vm.Spec.MemoryMiB = 256
	vm.Spec.UserData = ""
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMCreate, vm)))

	s, err := f.m.Console(vm.ID, messages.ConsoleInteractive, false)
	if err != nil {
		t.Fatal(err)
	}
	// One reader goroutine collects output; the test waits on it.
	out := make(chan []byte, 64)
	go func() {
		defer close(out)
		for {
			b, err := s.Next(context.Background())
			if err != nil {
				return
			}
			out <- b
		}
	}()
	var seen []byte
	waitOutput := func(re *regexp.Regexp, timeout time.Duration) bool {
		t.Helper()
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		for !re.Match(seen) {
			select {
			case b, ok := <-out:
				if !ok {
					t.Fatalf("console closed (%v) before %s; output:\n%s", s.Err(), re, seen)
				}
				seen = append(seen, b...)
			case <-timer.C:
				return false
			}
		}
		return true
	}
	if !waitOutput(regexp.MustCompile(guest.ReadyMarker+` instance-id=`+vm.ID), 3*time.Minute) {
		t.Fatalf("no boot marker; output:\n%s", seen)
	}
	// The shell may still be starting: type again until it answers.
	// "hello-42" appears only when the shell evaluated $((6*7)).
	want := regexp.MustCompile(`(?m)^hello-42\r?$`)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := s.Write([]byte("echo hello-$((6*7))\n")); err != nil {
			t.Fatalf("type: %v", err)
		}
		if waitOutput(want, 3*time.Second) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shell on ttyS0 did not answer; output:\n%s", seen)
		}
	}
	// A read-only session next to the writer starts with the recent output
	// replayed from the log.
	ro, err := f.m.Console(vm.ID, messages.ConsoleReadOnly, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var replay []byte
	for !want.Match(replay) {
		b, err := ro.Next(ctx)
		if err != nil {
			t.Fatalf("read-only replay: %v; got:\n%s", err, replay)
		}
		replay = append(replay, b...)
	}
	if _, err := f.m.Console(vm.ID, messages.ConsoleInteractive, false); errCode(err) != "console_busy" {
		t.Fatalf("second interactive: %v", err)
	}
	log, err := f.m.Log(vm.ID, 1<<20)
	if err != nil || !regexp.MustCompile(guest.ReadyMarker).Match(log) {
		t.Fatalf("serial log lacks the boot marker: %v\n%s", err, log)
	}

	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMStop, vm)))
	waitSessionClosed(t, s, messages.ConsoleVMStopped)
	waitSessionClosed(t, ro, messages.ConsoleVMStopped)
	mustSucceed(t, f.run(t, vmReq(messages.NewID(), messages.TaskVMDelete, vm)))
}
