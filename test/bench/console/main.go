// Command console measures the serial console (issue #6): keystroke → echo
// round trips through the control plane's proxy and the agent, the
// throughput of a 10 MiB burst of serial output (alone, and with a slow
// client attached that must be cut off with close 4002), and memory per
// open session. It runs two set-ups:
//
//   - pipe: the real console packages in this process over real (m)TLS,
//     with an echoing unix socket for QEMU's serial chardev (pipe.go says
//     exactly what is real and what stands in);
//   - guest: real otherix-api and otherix-agent binaries (make build) and a
//     real QEMU (TCG) running the test guest, whose tty echoes keystrokes.
//
// Usage: go run ./test/bench/console [-bin bin] [-keys 1000] [-sessions 100] [-guest=false]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/console"
)

func main() {
	bin := flag.String("bin", "bin", "directory of otherix-api, otherix-agent (make build)")
	keys := flag.Int("keys", 1000, "keystrokes timed per path")
	sessions := flag.Int("sessions", 100, "read-only sessions held open for the memory figure")
	burstMiB := flag.Int("burst-mib", 10, "serial output burst through the pipe, MiB")
	slowDelay := flag.Duration("slow-delay", 20*time.Millisecond, "the slow client's pause after every frame")
	withPipe := flag.Bool("pipe", true, "run the in-process pipe harness")
	withGuest := flag.Bool("guest", true, "also run the real binaries with the test guest under TCG")
	guestBurstKiB := flag.Int("guest-burst-kib", 256, "serial output the guest prints for its throughput figure, KiB")
	cycles := flag.Int("cycles", 2, "open/close cycles of the guest memory figure")
	keep := flag.Bool("keep", false, "keep the temp dir (logs of the guest run)")
	flag.Parse()

	fmt.Printf("console bench: %s, GOMAXPROCS=%d, %s; accelerator: none in the pipe set-up (no QEMU), the guest's is printed with it\n",
		time.Now().UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), load())
	failed := false
	if *withPipe {
		if err := runPipe(*keys, *sessions, *burstMiB<<20, *slowDelay); err != nil {
			fmt.Println("pipe: FAILED:", err)
			failed = true
		}
	}
	if *withGuest {
		if err := runGuest(*bin, *keys, *sessions, *guestBurstKiB<<10, *cycles, *keep); err != nil {
			fmt.Println("guest: FAILED:", err)
			failed = true
		}
	}
	fmt.Printf("console bench: done, %s\n", load())
	if failed {
		os.Exit(1)
	}
}

func runPipe(keys, n, burst int, slowDelay time.Duration) error {
	dir, err := os.MkdirTemp("", "oxc")
	if err != nil {
		return err
	}
	p, err := startPipe(dir, console.Options{})
	if err != nil {
		return err
	}
	defer p.stop()

	// Round trips: one interactive client, one keystroke at a time.
	fmt.Printf("pipe: %s\n", load())
	s, err := p.open(messages.ConsoleInteractive, true, 0)
	if err != nil {
		return err
	}
	if err := s.waitReplayed(5 * time.Second); err != nil {
		return err
	}
	if _, err := roundTrips(s, 50, 0, nil, 0); err != nil { // warm-up, untimed
		return err
	}
	rt, err := roundTrips(s, keys, 0, nil, 0)
	if err != nil {
		return err
	}
	fmt.Printf("pipe: round trip keystroke→echo (client→API proxy→agent→echo socket→back): %s\n", summarize(rt))
	s.close()

	// Throughput: a burst from the far end to one read-only client, first
	// unpaced, then offered at falling rates until the client keeps up;
	// then at that rate with a slow client attached as well.
	best := 0.0
	for _, rate := range []float64{0, 256, 128, 64, 32, 16, 8} {
		ok, err := pipeBurst(p, burst, rate, false, slowDelay)
		if err != nil {
			return err
		}
		if ok {
			best = rate
			break
		}
	}
	for _, rate := range []float64{best, best / 2} {
		if _, err := pipeBurst(p, burst, rate, true, slowDelay); err != nil {
			return err
		}
	}

	if err := pipeCapacity(burst); err != nil {
		return err
	}

	// Memory per open session: through the proxy (client, API and agent
	// ends all in this process), then straight to the agent.
	if err := pipeMemory(p, n, "proxy", func() (*session, error) { return p.open(messages.ConsoleReadOnly, false, 0) }); err != nil {
		return err
	}
	return pipeMemory(p, n, "agent only", func() (*session, error) { return p.openAgent(messages.ConsoleReadOnly) })
}

// pipeBurst sends burst bytes from the far end at rateMiB MiB/s (0: as fast
// as it can) and reports whether the fast client received them all.
func pipeBurst(p *pipe, burst int, rateMiB float64, withSlow bool, slowDelay time.Duration) (bool, error) {
	fast, err := p.open(messages.ConsoleReadOnly, false, 0)
	if err != nil {
		return false, err
	}
	defer fast.close()
	var slow *session
	if withSlow {
		if slow, err = p.open(messages.ConsoleReadOnly, false, slowDelay); err != nil {
			return false, err
		}
		defer slow.close()
	}
	for _, s := range []*session{fast, slow} {
		if s == nil {
			continue
		}
		if err := s.waitReplayed(5 * time.Second); err != nil {
			return false, err
		}
	}
	base := fast.counted()
	stopSampling, peak := sampleHeap()
	t0, err := p.far.burst(burst, rateMiB*(1<<20))
	if err != nil {
		return false, err
	}
	offered := "unpaced"
	if rateMiB > 0 {
		offered = fmt.Sprintf("offered at %.0f MiB/s", rateMiB)
	}
	label := "alone"
	if withSlow {
		label = fmt.Sprintf("with a slow client (pauses %s per frame)", slowDelay)
	}
	line := fmt.Sprintf("pipe: burst of %.0f MiB far end→client, %s, %s: ", mib(int64(burst)), offered, label)
	at, err := fast.waitTotal(base+int64(burst), 2*time.Minute)
	ok := err == nil
	if ok {
		d := at.Sub(t0)
		line += fmt.Sprintf("%.1f MiB/s (%s)", mib(int64(burst))/d.Seconds(), ms(d))
	} else {
		code, endAt := fast.ended()
		line += fmt.Sprintf("the client was CUT OFF: close %d (%q) %s after the start, having received %.2f MiB", code, fast.reason(), ms(endAt.Sub(t0)), mib(fast.counted()-base))
	}
	if slow != nil {
		select {
		case <-slow.done:
		case <-time.After(60 * time.Second):
		}
		code, endAt := slow.ended()
		when := "still open 60 s after the burst"
		if code != 0 {
			when = fmt.Sprintf("closed (%q) %s after the burst started", slow.reason(), ms(endAt.Sub(t0)))
		}
		line += fmt.Sprintf("; slow client: close code %d, %s, received %.2f MiB", code, when, mib(slow.counted()))
	}
	stopSampling()
	fmt.Printf("%s; process heap in use peaked %.1f MiB above its level before the burst\n", line, mib(int64(*peak)))
	return ok, nil
}

// sampleHeap samples HeapInuse every 10 ms until stopped; *peak is the
// highest rise over the level at the start.
func sampleHeap() (stop func(), peak *uint64) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	base := m.HeapInuse
	peak = new(uint64)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > base && m.HeapInuse-base > *peak {
					*peak = m.HeapInuse - base
				}
			}
		}
	}()
	return func() { close(quit); <-done }, peak
}

// heapNow is the live heap plus goroutine stacks after two collections.
func heapNow() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse)
}

func pipeMemory(p *pipe, n int, label string, open func() (*session, error)) error {
	time.Sleep(200 * time.Millisecond)
	h0, g0 := heapNow(), runtime.NumGoroutine()
	list := make([]*session, 0, n)
	for range n {
		s, err := open()
		if err != nil {
			return err
		}
		list = append(list, s)
	}
	for _, s := range list {
		if err := s.waitReplayed(10 * time.Second); err != nil {
			return err
		}
	}
	h1, g1 := heapNow(), runtime.NumGoroutine()
	for _, s := range list {
		s.close()
	}
	time.Sleep(2500 * time.Millisecond) // the proxy's close wait
	h2, g2 := heapNow(), runtime.NumGoroutine()
	fmt.Printf("pipe: memory, %d read-only sessions, %s: heap+stacks %.1f → %.1f MiB = %.1f KiB/session, %.1f goroutines/session; after closing all: %.1f MiB, %+d goroutines\n",
		n, label, mib(h0), mib(h1), float64(h1-h0)/1024/float64(n), float64(g1-g0)/float64(n), mib(h2), g2-g0)
	return nil
}

// pipeCapacity is what the two hops carry when the agent's per-session
// queue is not the limit: a hub with a 64 MiB queue (the default is
// 256 KiB), an unpaced burst, one reader. It separates the pipe's
// throughput from the cut-off policy.
func pipeCapacity(burst int) error {
	dir, err := os.MkdirTemp("", "oxc")
	if err != nil {
		return err
	}
	p, err := startPipe(dir, console.Options{QueueBytes: 64 << 20})
	if err != nil {
		return err
	}
	defer p.stop()
	// First, memory per session while the serial log is still empty, so
	// that no session holds a replay.
	if err := pipeMemory(p, 100, "proxy, empty serial log (no replay)", func() (*session, error) {
		return p.open(messages.ConsoleReadOnly, false, 0)
	}); err != nil {
		return err
	}
	fmt.Printf("pipe: capacity run (hub queue 64 MiB instead of the default 256 KiB), %s\n", load())
	_, err = pipeBurst(p, burst, 0, false, 0)
	return err
}
