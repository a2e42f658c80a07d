package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeGuestAgent is the guest's end of the channel, for the tests of what
// the agent does when qemu-ga answers: the test guest runs none. It speaks
// qemu-ga's protocol: a 0xFF resets its parser, guest-sync-delimited is
// answered after a 0xFF, and stale output precedes the first sync reply.
type fakeGuestAgent struct {
	mu     sync.Mutex
	frozen bool
	calls  []string
	// failFreeze makes freeze fail, as on a busy filesystem.
	failFreeze bool
}

func startFakeGuestAgent(t *testing.T, g *fakeGuestAgent) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "oqga")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", GuestAgentPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); g.serve(c) }()
		}
	}()
	return dir
}

func (g *fakeGuestAgent) serve(c net.Conn) {
	defer c.Close()
	// A previous session's reply, never read.
	_, _ = c.Write([]byte("{\"return\": 7}\n"))
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimLeft(line, "\xff")
		var cmd struct {
			Execute   string         `json:"execute"`
			Arguments map[string]any `json:"arguments"`
		}
		if json.Unmarshal([]byte(line), &cmd) != nil {
			continue
		}
		g.mu.Lock()
		g.calls = append(g.calls, cmd.Execute)
		g.mu.Unlock()
		reply := func(v any) {
			b, _ := json.Marshal(map[string]any{"return": v})
			_, _ = c.Write(append(b, '\n'))
		}
		switch cmd.Execute {
		case "guest-sync-delimited":
			_, _ = c.Write([]byte{0xff})
			reply(cmd.Arguments["id"])
		case "guest-ping":
			reply(map[string]any{})
		case "guest-fsfreeze-freeze":
			if g.failFreeze {
				_, _ = c.Write([]byte(`{"error":{"class":"GenericError","desc":"failed to freeze /: Device or resource busy"}}` + "\n"))
				continue
			}
			g.mu.Lock()
			g.frozen = true
			g.mu.Unlock()
			reply(2)
		case "guest-fsfreeze-thaw":
			g.mu.Lock()
			g.frozen = false
			g.mu.Unlock()
			reply(2)
		case "guest-fsfreeze-status":
			g.mu.Lock()
			st := map[bool]string{true: "frozen", false: "thawed"}[g.frozen]
			g.mu.Unlock()
			reply(st)
		}
	}
}

func (g *fakeGuestAgent) isFrozen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.frozen
}

// TestGuestAgentQuiesce: fn runs with the guest frozen, and the guest is
// thawed after it, also when fn fails; stale output before the sync is
// skipped.
func TestGuestAgentQuiesce(t *testing.T) {
	fake := &fakeGuestAgent{}
	dir := startFakeGuestAgent(t, fake)
	ctx := ctxT(t)
	g, err := DialGuestAgent(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	g.Close()
	var during bool
	if err := Quiesced(ctx, dir, func(context.Context) error { during = fake.isFrozen(); return nil }); err != nil {
		t.Fatal(err)
	}
	if !during || fake.isFrozen() {
		t.Errorf("frozen during fn: %v, after: %v", during, fake.isFrozen())
	}
	boom := errors.New("snapshot failed")
	if err := Quiesced(ctx, dir, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("err = %v, want fn's", err)
	}
	if fake.isFrozen() {
		t.Error("left frozen after fn failed")
	}
}

// TestGuestAgentFreezeFails: a freeze the guest refuses is reported as its
// error, fn does not run, and a thaw is sent anyway.
func TestGuestAgentFreezeFails(t *testing.T) {
	fake := &fakeGuestAgent{failFreeze: true}
	dir := startFakeGuestAgent(t, fake)
	ran := false
	err := Quiesced(ctxT(t), dir, func(context.Context) error { ran = true; return nil })
	var ge *GuestAgentError
	if !errors.As(err, &ge) || !strings.Contains(ge.Desc, "busy") || ran {
		t.Fatalf("err = %v, ran = %v", err, ran)
	}
	fake.mu.Lock()
	calls := strings.Join(fake.calls, ",")
	fake.mu.Unlock()
	if !strings.HasSuffix(calls, "guest-fsfreeze-thaw") {
		t.Errorf("calls %s: want a thaw last", calls)
	}
}

// TestGuestAgentUnavailable: a real QEMU whose guest runs no agent (here
// no guest at all): the channel accepts, nobody answers, and the caller
// gets guest_agent_unavailable within the sync timeout.
func TestGuestAgentUnavailable(t *testing.T) {
	s := sandboxed(t)
	p := startVM(t, s)
	start := time.Now()
	err := Quiesced(context.Background(), p.RunDir, func(context.Context) error {
		t.Error("fn ran without a guest agent")
		return nil
	})
	if !errors.Is(err, ErrGuestAgentUnavailable) || Code(err) != "guest_agent_unavailable" {
		t.Fatalf("err = %v, want guest_agent_unavailable", err)
	}
	if d := time.Since(start); d > GuestAgentSyncTimeout+5*time.Second {
		t.Errorf("took %v", d)
	}
	// A run dir with no channel at all (a VM started by an older agent).
	if _, err := DialGuestAgent(context.Background(), filepath.Join(os.TempDir(), "no-such-vm")); !errors.Is(err, ErrGuestAgentUnavailable) {
		t.Errorf("no socket: %v", err)
	}
}
