package dnsfwd

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestParseResolvConf(t *testing.T) {
	self := DefaultListen.Addr()
	ap := func(s string) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr(s), 53) }
	for _, tc := range []struct {
		name string
		in   string
		want []netip.AddrPort
	}{
		{"remote only", "nameserver 10.0.0.2\nnameserver 10.0.0.3\n", []netip.AddrPort{ap("10.0.0.2"), ap("10.0.0.3")}},
		{"loopback skipped when others exist", "nameserver 127.0.0.53\nnameserver 1.1.1.1\n", []netip.AddrPort{ap("1.1.1.1")}},
		{"only a stub: relay to it", "# systemd\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n", []netip.AddrPort{ap("127.0.0.53")}},
		{"self never", "nameserver 169.254.1.1\nnameserver 9.9.9.9\n", []netip.AddrPort{ap("9.9.9.9")}},
		{"self only", "nameserver 169.254.1.1\n", nil},
		{"ipv6 and junk", "nameserver fd00::1\nnameserver nope\nnameserver\ndomain x\n", []netip.AddrPort{ap("fd00::1")}},
		{"ipv6 loopback", "nameserver ::1\nnameserver 8.8.8.8\n", []netip.AddrPort{ap("8.8.8.8")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseResolvConf([]byte(tc.in), self)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLimiterPerSource(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(rate.Limit(10), 5, 100, func() time.Time { return now })
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	allowed := 0
	for range 50 {
		if l.allow(a) {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("flood: %d allowed, want the burst of 5", allowed)
	}
	if !l.allow(b) {
		t.Fatal("another source was limited")
	}
	now = now.Add(time.Second)
	allowed = 0
	for range 50 {
		if l.allow(a) {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("after 1s: %d allowed, want the refilled burst of 5", allowed)
	}
}

func TestLimiterBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(rate.Limit(10), 5, 8, func() time.Time { return now })
	for i := range 100 {
		l.allow(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
		if l.size() > 8 {
			t.Fatalf("%d sources kept, max 8", l.size())
		}
	}
	// Idle buckets go first: a busy source survives a wave of new ones.
	busy := netip.MustParseAddr("10.1.0.1")
	for range 10 {
		l.allow(busy)
	}
	now = now.Add(time.Second) // every other bucket refilled (idle 500ms)
	l.allow(busy)
	for i := range 7 {
		l.allow(netip.AddrFrom4([4]byte{10, 2, 0, byte(i)}))
	}
	l.mu.Lock()
	_, kept := l.sources[busy]
	l.mu.Unlock()
	if !kept {
		t.Fatal("the busy source was evicted before idle ones")
	}
}

func TestMsgFraming(t *testing.T) {
	q := []byte{0xab, 0xcd, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1, 3, 'f', 'o', 'o', 0}
	var buf bytes.Buffer
	if err := writeMsg(&buf, q); err != nil {
		t.Fatal(err)
	}
	if got := buf.Bytes()[:2]; got[0] != 0 || int(got[1]) != len(q) {
		t.Fatalf("length prefix %v", got)
	}
	r, err := readMsg(&buf)
	if err != nil || !bytes.Equal(r, q) {
		t.Fatalf("read %v, %v", r, err)
	}
	if _, err := readMsg(bytes.NewReader([]byte{0, 3, 1, 2, 3})); err == nil {
		t.Fatal("a message shorter than a header was accepted")
	}
	if !isQuery(q) || isQuery(servfail(q)) || isQuery(q[:5]) {
		t.Fatal("isQuery")
	}
	sf := servfail(q)
	if sf[0] != 0xab || sf[1] != 0xcd || sf[2] != 0x81 || sf[3]&0x0f != 2 || len(sf) != headerLen {
		t.Fatalf("servfail %x", sf)
	}
}
