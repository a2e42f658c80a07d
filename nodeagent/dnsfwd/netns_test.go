//go:build netfabric

package dnsfwd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/otherix/otherix/internal/netnstest"
)

// The test builds a node namespace whose bridge carries 169.254.1.1, two
// "VM" namespaces on veths in that bridge, and an upstream namespace with a
// fake resolver; all traffic stays in them and cleanup deletes them.

// fakeUpstream serves A records in ns on addr: NAME.test. → 10.9.8.7, and
// many.test. → 60 addresses (truncated over UDP without EDNS).
func fakeUpstream(t *testing.T, ns, addr string) {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		n := 1
		if name == "many.test." {
			n = 60
		}
		for i := range n {
			rr, _ := dns.NewRR(fmt.Sprintf("%s 60 IN A 10.9.%d.7", name, 8+i))
			m.Answer = append(m.Answer, rr)
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			size := dns.MinMsgSize
			if o := q.IsEdns0(); o != nil {
				size = int(o.UDPSize())
			}
			m.Truncate(size)
		}
		w.WriteMsg(m)
	})
	var pc net.PacketConn
	var l net.Listener
	var err1, err2 error
	netnstest.In(t, ns, func() {
		pc, err1 = net.ListenPacket("udp4", addr)
		l, err2 = net.Listen("tcp4", addr)
	})
	if err1 != nil || err2 != nil {
		t.Fatalf("fake upstream: %v %v", err1, err2)
	}
	us := &dns.Server{PacketConn: pc, Handler: h}
	ts := &dns.Server{Listener: l, Handler: h}
	var wg sync.WaitGroup
	for _, s := range []*dns.Server{us, ts} {
		wg.Add(1)
		go func() { defer wg.Done(); s.ActivateAndServe() }()
	}
	t.Cleanup(func() { us.Shutdown(); ts.Shutdown(); wg.Wait() })
}

// query asks the forwarder from ns; it returns the answer or the error.
func query(t *testing.T, ns, network, name string, edns bool) (*dns.Msg, error) {
	t.Helper()
	var r *dns.Msg
	var err error
	netnstest.In(t, ns, func() {
		c := &dns.Client{Net: network, Timeout: 3 * time.Second}
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		if edns {
			q.SetEdns0(4096, false)
		}
		r, _, err = c.Exchange(q, DefaultListen.String())
	})
	return r, err
}

type fixture struct {
	node, vm1, vm2, up string
}

func newFixture(t *testing.T) fixture {
	netnstest.RequireRoot(t)
	f := fixture{node: netnstest.New(t, "oxd", "node"), vm1: netnstest.New(t, "oxd", "vm1"), vm2: netnstest.New(t, "oxd", "vm2"), up: netnstest.New(t, "oxd", "up")}
	netnstest.IP(t, "-n", f.node, "link", "add", "br0", "type", "bridge")
	netnstest.IP(t, "-n", f.node, "addr", "add", "169.254.1.1/32", "dev", "br0")
	netnstest.IP(t, "-n", f.node, "link", "set", "br0", "up")
	netnstest.IP(t, "-n", f.node, "route", "add", "10.50.0.0/24", "dev", "br0")
	for i, vm := range []string{f.vm1, f.vm2} {
		tap := fmt.Sprintf("vm%d", i+1)
		netnstest.IP(t, "-n", f.node, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", vm)
		netnstest.IP(t, "-n", f.node, "link", "set", tap, "master", "br0", "up")
		netnstest.IP(t, "-n", vm, "addr", "add", fmt.Sprintf("10.50.0.%d/24", 10+i), "dev", "eth0")
		netnstest.IP(t, "-n", vm, "link", "set", "eth0", "up")
		netnstest.IP(t, "-n", vm, "route", "add", "169.254.1.1/32", "dev", "eth0", "scope", "link")
	}
	netnstest.IP(t, "-n", f.node, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", f.up)
	netnstest.IP(t, "-n", f.node, "addr", "add", "192.0.2.1/24", "dev", "up0")
	netnstest.IP(t, "-n", f.node, "link", "set", "up0", "up")
	netnstest.IP(t, "-n", f.up, "addr", "add", "192.0.2.53/24", "dev", "eth0")
	netnstest.IP(t, "-n", f.up, "link", "set", "eth0", "up")
	fakeUpstream(t, f.up, "192.0.2.53:53")
	return f
}

func startForwarder(t *testing.T, f fixture, cfg Config) *Forwarder {
	t.Helper()
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	// The loopback stub and the forwarder's own address must be skipped.
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.53\nnameserver 169.254.1.1\nnameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Netns = filepath.Join("/var/run/netns", f.node)
	cfg.ResolvConf = rc
	fw, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fw.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return fw
}

func TestForwarderResolves(t *testing.T) {
	f := newFixture(t)
	startForwarder(t, f, Config{})
	for _, tc := range []struct {
		network, name string
		edns          bool
		answers       int
		truncated     bool
	}{
		{"udp", "vm.test.", false, 1, false},
		{"tcp", "vm.test.", false, 1, false},
		// Upstream truncates for a plain UDP client; the forwarder relays
		// the TC bit and the client retries over TCP.
		{"udp", "many.test.", false, -1, true},
		{"udp", "many.test.", true, 60, false},
		{"tcp", "many.test.", false, 60, false},
	} {
		t.Run(fmt.Sprintf("%s/%s/edns=%v", tc.network, tc.name, tc.edns), func(t *testing.T) {
			r, err := query(t, f.vm1, tc.network, tc.name, tc.edns)
			if err != nil {
				t.Fatal(err)
			}
			if r.Truncated != tc.truncated {
				t.Fatalf("truncated %v, want %v", r.Truncated, tc.truncated)
			}
			if tc.answers >= 0 && len(r.Answer) != tc.answers {
				t.Fatalf("%d answers, want %d", len(r.Answer), tc.answers)
			}
			if len(r.Answer) > 0 && r.Answer[0].(*dns.A).A.String() != "10.9.8.7" {
				t.Fatalf("answer %v", r.Answer[0])
			}
		})
	}
}

func TestForwarderRateLimitsPerSource(t *testing.T) {
	f := newFixture(t)
	startForwarder(t, f, Config{Rate: 5, Burst: 10})
	// vm1 floods: 200 queries as fast as it can, on one socket.
	answered := 0
	netnstest.In(t, f.vm1, func() {
		c, err := net.Dial("udp4", DefaultListen.String())
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for i := range 200 {
			q := new(dns.Msg)
			q.SetQuestion("flood.test.", dns.TypeA)
			q.Id = uint16(i + 1)
			b, _ := q.Pack()
			c.Write(b)
		}
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			answered++
		}
	})
	// Burst 10 plus 5/s over the ~2s of the flood and its reads.
	if answered == 0 || answered > 25 {
		t.Fatalf("flooding source got %d of 200 answers, want 1..25", answered)
	}
	// vm2 is not limited by vm1's flood.
	for _, network := range []string{"udp", "tcp"} {
		r, err := query(t, f.vm2, network, "calm.test.", false)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("%s: other source: %v %v", network, r, err)
		}
	}
	t.Logf("flooding source got %d of 200 answers", answered)
}

func TestForwarderNoUpstream(t *testing.T) {
	f := newFixture(t)
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	// An upstream nobody serves: the client gets SERVFAIL, not silence.
	os.WriteFile(rc, []byte("nameserver 192.0.2.99\n"), 0o644)
	fw, err := Start(Config{Netns: filepath.Join("/var/run/netns", f.node), ResolvConf: rc, Timeout: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	r, err := query(t, f.vm1, "udp", "x.test.", false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}
