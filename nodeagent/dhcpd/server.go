// Package dhcpd is a DHCPv4 responder for one network bridge: it hands
// each known VM NIC (by MAC) the address the control plane allocated it,
// with routes through the anycast gateway 169.254.1.1, DNS at the same
// address and the network's MTU. It allocates nothing: an unknown MAC gets
// no answer, so guests with cloud-init and other DHCP servers are not
// disturbed.
package dhcpd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netns"
)

// Defaults of a Config whose fields are zero.
const (
	// DefaultLeaseTime is long: the address is the VM's for its lifetime.
	DefaultLeaseTime = 7 * 24 * time.Hour
)

// DefaultServerIP is the anycast gateway, the responder's identity on
// every bridge of every node, so a moved VM renews with the same server.
var DefaultServerIP = netip.MustParseAddr("169.254.1.1")

// Lease is the fixed address of one VM NIC.
type Lease struct {
	// MAC is the NIC's MAC address.
	MAC net.HardwareAddr
	// IP is the NIC's address and PrefixLen its network's prefix length.
	IP        netip.Addr
	PrefixLen int
	// MTU is the network's MTU (0: the option is left out).
	MTU int
}

// Config configures a Server.
type Config struct {
	// Interface is the bridge served; the socket is bound to it
	// (SO_BINDTODEVICE). Required.
	Interface string
	// Netns is the path of the bridge's network namespace; empty means the
	// process's.
	Netns string
	// ServerIP is the server identifier, router and DNS server handed out
	// (zero: DefaultServerIP).
	ServerIP netip.Addr
	// LeaseTime is the lease handed out (0: DefaultLeaseTime).
	LeaseTime time.Duration
	// Log receives failures and the leases handed out; nil discards them.
	Log *slog.Logger
}

// Server answers DHCP on one bridge. Start it with Start; Close stops it
// and waits for its goroutine.
type Server struct {
	cfg  Config
	conn net.PacketConn
	done chan struct{}

	// mu guards leases and closed.
	mu sync.Mutex
	// leases maps a lower-case MAC to its lease.
	leases map[string]Lease
	closed bool
}

// Start binds UDP port 67 on cfg.Interface and serves leases until Close.
func Start(cfg Config, leases []Lease) (*Server, error) {
	if cfg.Interface == "" {
		return nil, fmt.Errorf("%w: no interface", ErrInvalid)
	}
	if !cfg.ServerIP.IsValid() {
		cfg.ServerIP = DefaultServerIP
	}
	if !cfg.ServerIP.Is4() {
		return nil, fmt.Errorf("%w: server ip %s is not IPv4", ErrInvalid, cfg.ServerIP)
	}
	if cfg.LeaseTime <= 0 {
		cfg.LeaseTime = DefaultLeaseTime
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, done: make(chan struct{})}
	if err := s.SetLeases(leases); err != nil {
		return nil, err
	}
	var err error
	err = inNetns(cfg.Netns, func() error {
		s.conn, err = server4.NewIPv4UDPConn(cfg.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dhcpd: listen on %s: %w", cfg.Interface, err)
	}
	go s.serve()
	return s, nil
}

// SetLeases replaces the leases served; the responder answers from the
// new table at once.
func (s *Server) SetLeases(leases []Lease) error {
	m := make(map[string]Lease, len(leases))
	for _, l := range leases {
		if len(l.MAC) != 6 || !l.IP.Is4() || l.PrefixLen < 1 || l.PrefixLen > 32 {
			return fmt.Errorf("%w: lease %s %s/%d", ErrInvalid, l.MAC, l.IP, l.PrefixLen)
		}
		m[strings.ToLower(l.MAC.String())] = l
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.leases = m
	return nil
}

// Interface is the bridge served.
func (s *Server) Interface() string { return s.cfg.Interface }

// Close stops serving and waits for the read loop to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.mu.Unlock()
	err := s.conn.Close()
	<-s.done
	return err
}

// serve answers requests one at a time: each answer is computed from
// memory and sent at once, so no request waits long.
func (s *Server) serve() {
	defer close(s.done)
	buf := make([]byte, 4096)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			s.cfg.Log.Warn("dhcpd: read", "interface", s.cfg.Interface, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			continue
		}
		resp, to := s.reply(req)
		if resp == nil {
			continue
		}
		if _, err := s.conn.WriteTo(resp.ToBytes(), to); err != nil {
			s.cfg.Log.Warn("dhcpd: send", "interface", s.cfg.Interface, "to", to.String(), "err", err)
			continue
		}
		s.cfg.Log.Debug("dhcpd: answered", "interface", s.cfg.Interface, "mac", req.ClientHWAddr.String(),
			"type", resp.MessageType().String(), "ip", resp.YourIPAddr.String())
	}
}

// inNetns runs fn on a thread in the namespace at path (the caller's when
// path is empty): a socket belongs to the namespace it was made in. The
// thread is thrown away afterwards rather than switched back.
func inNetns(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with us
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
