//go:build etcd

package election_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/persistence/election"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/etcdtest"
)

const ttl = 3 * time.Second

// runs records every run of the loop on every replica.
type runs struct {
	mu   sync.Mutex
	list []run
}

type run struct {
	who        string
	start, end time.Time
}

// loop is a registered loop of replica who: it runs until its context ends.
func (r *runs) loop(who string) func(context.Context) {
	return func(ctx context.Context) {
		r.mu.Lock()
		r.list = append(r.list, run{who: who, start: time.Now()})
		i := len(r.list) - 1
		r.mu.Unlock()
		<-ctx.Done()
		r.mu.Lock()
		r.list[i].end = time.Now()
		r.mu.Unlock()
	}
}

// running lists the replicas whose loop runs now.
func (r *runs) running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, x := range r.list {
		if x.end.IsZero() {
			out = append(out, x.who)
		}
	}
	return out
}

// latest is the last run started.
func (r *runs) latest() run {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.list[len(r.list)-1]
}

// noOverlap fails the test if two runs were ever under way at once.
func (r *runs) noOverlap(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	overlaps := 0
	for i, a := range r.list {
		for _, b := range r.list[i+1:] {
			ae, be := a.end, b.end
			if ae.IsZero() {
				ae = now
			}
			if be.IsZero() {
				be = now
			}
			if a.start.Before(be) && b.start.Before(ae) {
				overlaps++
				t.Errorf("runs overlap: %s %s..%s and %s %s..%s", a.who, a.start.Format(time.StampMicro), ae.Format(time.StampMicro),
					b.who, b.start.Format(time.StampMicro), be.Format(time.StampMicro))
			}
		}
	}
	if overlaps == 0 {
		t.Logf("%d runs, none overlapping", len(r.list))
	}
}

// replica is one campaigning replica: its loops and how to stop its Run.
type replica struct {
	loops *election.Loops
	stop  context.CancelFunc
	done  chan struct{}
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func campaign(t *testing.T, cli *clientv3.Client, name string, r *runs, sole func(context.Context) bool) *replica {
	t.Helper()
	l := election.New(election.Config{Client: cli, Name: name, TTL: ttl, Log: quietLog(), Sole: sole})
	l.Register("recorded", r.loop(name))
	ctx, cancel := context.WithCancel(context.Background())
	rep := &replica{loops: l, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(rep.done)
		l.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-rep.done
	})
	return rep
}

// owner waits until exactly one replica runs the loop and returns it.
func owner(t *testing.T, r *runs, within time.Duration) string {
	t.Helper()
	var who string
	testutil.EventuallyReport(t, within, 5*time.Millisecond, "exactly one replica running the loops", func() (bool, string) {
		on := r.running()
		if len(on) > 1 {
			t.Fatalf("several replicas run the loops at once: %v", on)
		}
		if len(on) == 1 {
			who = on[0]
		}
		return len(on) == 1, fmt.Sprint(on)
	})
	return who
}

// TestOneOwnerAcrossReplicas: three replicas campaign; exactly one runs the
// loops; a graceful shutdown hands them over at once; a killed owner's
// member (its lease left to expire) is replaced within the TTL and its loops
// stop before the next owner's start.
func TestOneOwnerAcrossReplicas(t *testing.T) {
	c := etcdtest.Start3(t)
	r := &runs{}
	reps := map[string]*replica{}
	for _, n := range c.Names() {
		reps[n] = campaign(t, c.Member(n).Client(), n, r, nil)
	}
	first := owner(t, r, 20*time.Second)
	if !reps[first].loops.Owner() {
		t.Fatalf("%s runs the loops but does not say it owns them", first)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got, err := election.CurrentOwner(ctx, c.Member(first).Client(), ""); err != nil || got != first {
		t.Fatalf("current owner = %q, %v; want %s", got, err, first)
	}

	// Graceful: the owner resigns and another takes over at once.
	start := time.Now()
	reps[first].stop()
	second := ""
	testutil.Eventually(t, ttl, 2*time.Millisecond, "another owner after a resignation", func() bool {
		on := r.running()
		if len(on) == 1 && on[0] != first {
			second = on[0]
		}
		return second != ""
	})
	handover := time.Since(start)
	<-reps[first].done
	t.Logf("measure: graceful resign → next owner's loops start: %s", handover)
	if handover > ttl/2 {
		t.Errorf("graceful handover took %s, want well under the TTL %s", handover, ttl)
	}

	// Killed: the owner's member dies; its loops must stop, and another
	// replica's start, within the TTL and a margin for elections.
	start = time.Now()
	c.Stop(second)
	third := ""
	testutil.EventuallyReport(t, ttl+10*time.Second, 5*time.Millisecond, "a third owner after the kill", func() (bool, string) {
		on := r.running()
		if len(on) == 1 && on[0] != second {
			third = on[0]
		}
		return third != "", fmt.Sprint(on)
	})
	took := time.Since(start)
	t.Logf("measure: owner's member killed → next owner's loops start: %s (TTL %s)", took, ttl)
	if took > ttl+5*time.Second {
		t.Errorf("takeover after a kill took %s, want under TTL + 5s", took)
	}
	if third == first {
		t.Fatalf("the replica that resigned took the loops back: its Run had ended")
	}
	r.noOverlap(t)
}

// TestLoopsStopWithoutQuorum: an owner whose member cannot reach a quorum
// (the two others are down) stops its loops before its lease could expire
// on any leader; when the others return, exactly one replica owns the loops
// again, and at no time did two run them.
func TestLoopsStopWithoutQuorum(t *testing.T) {
	c := etcdtest.Start3(t)
	r := &runs{}
	reps := map[string]*replica{}
	for _, n := range c.Names() {
		reps[n] = campaign(t, c.Member(n).Client(), n, r, nil)
	}
	own := owner(t, r, 20*time.Second)
	var others []string
	for _, n := range c.Names() {
		if n != own {
			others = append(others, n)
		}
	}
	start := time.Now()
	for _, n := range others {
		c.Stop(n)
		reps[n].stop() // their processes are gone too
	}
	testutil.Eventually(t, ttl+5*time.Second, 5*time.Millisecond, "the isolated owner's loops to stop", func() bool {
		return len(r.running()) == 0
	})
	stopped := time.Since(start)
	t.Logf("measure: quorum lost → owner's loops stopped after %s (TTL %s)", stopped, ttl)
	if reps[own].loops.Owner() {
		t.Fatal("the isolated replica still says it owns the loops")
	}

	for _, n := range others {
		m := c.Restart(n)
		reps[n] = campaign(t, m.Client(), n, r, nil)
	}
	back := owner(t, r, 30*time.Second)
	t.Logf("owner after quorum returned: %s (before: %s)", back, own)
	// Hold for a while: still exactly one.
	deadline := time.Now().Add(ttl)
	for time.Now().Before(deadline) {
		if on := r.running(); len(on) > 1 {
			t.Fatalf("several owners: %v", on)
		}
		time.Sleep(20 * time.Millisecond) // sampling interval, not synchronization
	}
	r.noOverlap(t)
}

// TestSoleMemberOwnsAtOnce: a single-member cluster whose previous owner
// died without resigning (a crash, or a restored snapshot carrying another
// replica's key) owns its loops at once, not after the dead owner's TTL.
func TestSoleMemberOwnsAtOnce(t *testing.T) {
	dir := t.TempDir()
	sock := "unix://" + filepath.Join(dir, "client.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, etcd.Config{DataDir: filepath.Join(dir, "d"), ClientURL: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// The crashed process: its own connection, closed without a word.
	dead, err := clientv3.New(clientv3.Config{Endpoints: []string{sock}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r := &runs{}
	l := election.New(election.Config{Client: dead, Name: "before", TTL: 10 * time.Second, Log: quietLog()})
	var gone runs
	l.Register("recorded", gone.loop("before"))
	runCtx, stopRun := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		l.Run(runCtx)
	}()
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the first process to own the loops", l.Owner)
	dead.Close()
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "the dead process's loops to stop", func() bool { return len(gone.running()) == 0 })
	stopRun()
	<-ran

	sole := func(ctx context.Context) bool {
		ms, err := m.Members(ctx)
		return err == nil && len(ms) == 1
	}
	start := time.Now()
	campaign(t, m.Client(), "after", r, sole)
	owner(t, r, 10*time.Second)
	took := time.Since(start)
	t.Logf("measure: sole member owns its loops %s after start (dead owner's TTL 10s)", took)
	if took > 3*time.Second {
		t.Fatalf("the sole member waited %s for a dead owner's lease", took)
	}
}

// frozenProxy forwards TCP connections to a unix socket until frozen: from
// then on no byte passes either way and nothing is closed, as when the
// network to etcd goes silent.
type frozenProxy struct {
	ln     net.Listener
	frozen chan struct{}
	done   chan struct{}
	once   sync.Once
}

func newFrozenProxy(t *testing.T, sock string) *frozenProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &frozenProxy{ln: ln, frozen: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", sock)
			if err != nil {
				c.Close()
				continue
			}
			for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
				wg.Add(1)
				go func(dst, src net.Conn) {
					defer wg.Done()
					defer dst.Close()
					buf := make([]byte, 32<<10)
					for {
						n, err := src.Read(buf)
						select {
						case <-p.frozen:
							<-p.done
							return
						default:
						}
						if n > 0 {
							if _, werr := dst.Write(buf[:n]); werr != nil {
								return
							}
						}
						if err != nil {
							return
						}
					}
				}(pair[0], pair[1])
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-p.done
				c.Close()
				up.Close()
			}()
		}
	}()
	return p
}

func (p *frozenProxy) freeze() { p.once.Do(func() { close(p.frozen) }) }

// TestSilentEtcdStopsLoopsBeforeExpiry: the owner's connection to etcd goes
// silent (no error, no close), so its lease is neither renewed nor reported
// lost. Its loops must stop before the lease can expire on the server,
// where another replica then wins: with a margin, not by luck of timing.
// Without the two-thirds-of-the-TTL check they would run until the client's
// own lease deadline, about when the other replica starts them.
func TestSilentEtcdStopsLoopsBeforeExpiry(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "client.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, etcd.Config{DataDir: filepath.Join(dir, "d"), ClientURL: "unix://" + sock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	p := newFrozenProxy(t, sock)
	far, err := clientv3.New(clientv3.Config{Endpoints: []string{p.ln.Addr().String()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { far.Close() })
	r := &runs{}
	first := campaign(t, far, "far", r, nil)
	testutil.Eventually(t, 10*time.Second, 5*time.Millisecond, "far to own the loops", first.loops.Owner)
	campaign(t, m.Client(), "near", r, nil)

	p.freeze()
	frozen := time.Now()
	testutil.Eventually(t, 3*ttl, 5*time.Millisecond, "near to own the loops", func() bool {
		on := r.running()
		return len(on) == 1 && on[0] == "near"
	})
	r.noOverlap(t)
	r.mu.Lock()
	var farEnd, nearStart time.Time
	for _, x := range r.list {
		switch x.who {
		case "far":
			farEnd = x.end
		case "near":
			nearStart = x.start
		}
	}
	r.mu.Unlock()
	t.Logf("measure: etcd silent → far's loops stopped after %s; near's started after %s (TTL %s)",
		farEnd.Sub(frozen), nearStart.Sub(frozen), ttl)
	if margin := nearStart.Sub(farEnd); margin < ttl/6 {
		t.Fatalf("far's loops stopped only %s before near's started; want at least %s", margin, ttl/6)
	}
}
