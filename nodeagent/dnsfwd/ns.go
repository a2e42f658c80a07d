package dnsfwd

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsWorkers is how many namespace goroutines make sockets: a TCP connect
// to a slow upstream holds one for up to the attempt timeout.
const nsWorkers = 4

// sockets creates sockets in one network namespace. A socket belongs to the
// namespace of the thread that created it, so with a namespace path
// dedicated goroutines lock their threads into the namespace for the
// forwarder's life and make every socket there; the threads are never
// switched back, and exit with the goroutines at close.
type sockets struct {
	// reqs carries work to the namespace goroutines; nil when sockets are
	// made by the caller (the namespace of the process).
	reqs chan func()
	wg   sync.WaitGroup
}

func newSockets(path string) (*sockets, error) {
	if path == "" {
		return &sockets{}, nil
	}
	s := &sockets{reqs: make(chan func())}
	for range nsWorkers {
		if err := s.startWorker(path); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

func (s *sockets) startWorker(path string) error {
	errc := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		runtime.LockOSThread() // never unlocked: the thread dies with us
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		err = netns.Set(ns)
		ns.Close()
		if err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		errc <- nil
		for fn := range s.reqs {
			fn()
		}
	}()
	return <-errc
}

// do runs fn where sockets are made.
func (s *sockets) do(fn func()) {
	if s.reqs == nil {
		fn()
		return
	}
	ran := make(chan struct{})
	s.reqs <- func() { fn(); close(ran) }
	<-ran
}

// close ends the namespace goroutines; no do may run during or after it.
func (s *sockets) close() {
	if s.reqs != nil {
		close(s.reqs)
		s.wg.Wait()
	}
}

// freebind lets a listener bind 169.254.1.1 before any bridge carries it.
func freebind(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

func (s *sockets) listenUDP(addr string) (pc net.PacketConn, err error) {
	s.do(func() {
		lc := net.ListenConfig{Control: freebind}
		pc, err = lc.ListenPacket(context.Background(), "udp4", addr)
	})
	return pc, err
}

func (s *sockets) listenTCP(addr string) (l net.Listener, err error) {
	s.do(func() {
		lc := net.ListenConfig{Control: freebind}
		l, err = lc.Listen(context.Background(), "tcp4", addr)
	})
	return l, err
}

// dial connects to an upstream. The connect of a TCP dial runs in the
// namespace goroutine too, so ctx bounds it.
func (s *sockets) dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	s.do(func() {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
	})
	return c, err
}
