// Package dnsfwd is the node's DNS forwarder: it listens on the anycast
// address 169.254.1.1:53 (UDP and TCP) that every network bridge carries,
// and relays each guest query, unchanged, to the node's own upstream
// resolvers from resolv.conf, with a token bucket per source address.
//
// One forwarder serves every bridge of the node: the address is local on
// each, and nftables lets only VM traffic to port 53 reach it.
package dnsfwd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of a Config whose fields are zero.
const (
	DefaultResolvConf = "/etc/resolv.conf"
	// DefaultRate and DefaultBurst bound the queries of one source address.
	DefaultRate  = rate.Limit(50)
	DefaultBurst = 100
	// DefaultMaxSources bounds the per-source buckets kept.
	DefaultMaxSources = 4096
	// DefaultTimeout bounds one query, all upstream attempts included.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxInFlight bounds UDP queries waiting on upstreams; more are
	// dropped (the client retries).
	DefaultMaxInFlight = 1024
	// DefaultMaxTCPConns bounds open client TCP connections.
	DefaultMaxTCPConns = 256
	// tcpIdle is how long a client TCP connection may sit between queries.
	tcpIdle = 10 * time.Second
	// attemptTimeout bounds one upstream try before the next is asked.
	attemptTimeout = 2 * time.Second
	// resolvConfEvery spaces the checks for a changed resolv.conf.
	resolvConfEvery = 2 * time.Second
	// maxMsg is the largest DNS message over UDP or TCP.
	maxMsg = 65535
	// headerLen is the DNS header length.
	headerLen = 12
)

// DefaultListen is the anycast DNS address guests are given.
var DefaultListen = netip.MustParseAddrPort("169.254.1.1:53")

// Config configures a Forwarder.
type Config struct {
	// Listen is the address served over UDP and TCP (zero: DefaultListen).
	// It is bound with IP_FREEBIND, so it need not exist yet.
	Listen netip.AddrPort
	// Netns is the path of the network namespace to listen and dial in;
	// empty means the process's.
	Netns string
	// ResolvConf names the upstream resolvers (empty: DefaultResolvConf).
	// It is reread when it changes.
	ResolvConf string
	// Upstreams, if set, replaces ResolvConf.
	Upstreams []netip.AddrPort
	// Rate and Burst are each source address's token bucket.
	Rate  rate.Limit
	Burst int
	// MaxSources bounds the buckets kept; the idle ones go first.
	MaxSources int
	// Timeout bounds one query.
	Timeout time.Duration
	// MaxInFlight bounds concurrent UDP queries.
	MaxInFlight int
	// MaxTCPConns bounds concurrent client TCP connections.
	MaxTCPConns int
	// Log receives failures; nil discards them.
	Log *slog.Logger
}

// Forwarder relays DNS queries. Start it with Start; Close stops it and
// waits for every goroutine it started.
type Forwarder struct {
	cfg   Config
	socks *sockets
	udp   net.PacketConn
	tcp   net.Listener
	lim   *limiter
	// inflight and tcpConns are semaphores.
	inflight chan struct{}
	tcpConns chan struct{}
	// done is closed by Close; wg counts every goroutine.
	done chan struct{}
	// ctx is the lifecycle root of queries in flight, ended by Close.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// mu guards the fields below it.
	mu sync.Mutex
	// conns are the open client TCP connections, closed by Close.
	conns map[net.Conn]struct{}
	// ups is the current upstream list, read from resolv.conf at checked.
	ups     []netip.AddrPort
	modTime time.Time
	checked time.Time
	closed  bool
}

// Start binds the listeners and starts serving.
func Start(cfg Config) (*Forwarder, error) {
	if !cfg.Listen.IsValid() {
		cfg.Listen = DefaultListen
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = DefaultResolvConf
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxSources <= 0 {
		cfg.MaxSources = DefaultMaxSources
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxTCPConns <= 0 {
		cfg.MaxTCPConns = DefaultMaxTCPConns
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	socks, err := newSockets(cfg.Netns)
	if err != nil {
		return nil, fmt.Errorf("dnsfwd: %w", err)
	}
	f := &Forwarder{cfg: cfg, socks: socks, lim: newLimiter(cfg.Rate, cfg.Burst, cfg.MaxSources, time.Now),
		inflight: make(chan struct{}, cfg.MaxInFlight), tcpConns: make(chan struct{}, cfg.MaxTCPConns),
		done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	addr := cfg.Listen.String()
	if f.udp, err = socks.listenUDP(addr); err != nil {
		f.cancel()
		socks.close()
		return nil, fmt.Errorf("dnsfwd: listen udp %s: %w", addr, err)
	}
	if f.tcp, err = socks.listenTCP(addr); err != nil {
		f.udp.Close()
		f.cancel()
		socks.close()
		return nil, fmt.Errorf("dnsfwd: listen tcp %s: %w", addr, err)
	}
	f.wg.Add(2)
	go f.serveUDP()
	go f.serveTCP()
	return f, nil
}

// Addr is the address served.
func (f *Forwarder) Addr() netip.AddrPort { return f.cfg.Listen }

// Close stops the listeners, drops open connections and waits for every
// query in flight to end.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return ErrClosed
	}
	f.closed = true
	close(f.done)
	f.cancel()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	err := errors.Join(f.udp.Close(), f.tcp.Close())
	f.wg.Wait()
	f.socks.close()
	return err
}

// upstreams is the current upstream list, rereading resolv.conf at most
// every resolvConfEvery and only when it changed; a failed read keeps the
// last good list.
func (f *Forwarder) upstreams() ([]netip.AddrPort, error) {
	if len(f.cfg.Upstreams) > 0 {
		return f.cfg.Upstreams, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.ups != nil && now.Sub(f.checked) < resolvConfEvery {
		return f.ups, nil
	}
	f.checked = now
	st, err := os.Stat(f.cfg.ResolvConf)
	if err == nil && f.ups != nil && st.ModTime().Equal(f.modTime) {
		return f.ups, nil
	}
	var ups []netip.AddrPort
	if err == nil {
		ups, err = readResolvConf(f.cfg.ResolvConf, f.cfg.Listen.Addr())
	}
	if err != nil {
		if f.ups != nil {
			return f.ups, nil
		}
		return nil, fmt.Errorf("dnsfwd: upstreams from %s: %w", f.cfg.ResolvConf, err)
	}
	f.ups, f.modTime = ups, st.ModTime()
	return ups, nil
}

// isQuery says whether msg looks like a DNS query: a full header with the
// QR bit clear. Anything else is dropped, so the forwarder never relays
// responses (a reflection path).
func isQuery(msg []byte) bool {
	return len(msg) >= headerLen && msg[2]&0x80 == 0
}

// servfail turns a query into a SERVFAIL answer with no records, for when
// no upstream answered: the client stops waiting.
func servfail(q []byte) []byte {
	r := make([]byte, headerLen)
	copy(r, q[:headerLen])
	r[2] = r[2]&0x79 | 0x80 // QR set; keep opcode and RD; clear AA and TC
	r[3] = 0x80 | 2         // RA, RCODE SERVFAIL
	for i := 4; i < headerLen; i++ {
		r[i] = 0 // no sections (not even the question: it was not parsed)
	}
	return r
}

func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
