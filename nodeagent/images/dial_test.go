package images

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
)

func TestDestPolicy(t *testing.T) {
	p := &destPolicy{allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.53/32"), netip.MustParsePrefix("10.0.9.0/24")},
		localAddrs: func() []netip.Addr {
			return []netip.Addr{netip.MustParseAddr("192.168.1.2"), netip.MustParseAddr("10.0.9.9")}
		}}
	p.setCluster([]netip.Prefix{netip.MustParsePrefix("10.240.0.0/12"), netip.MustParsePrefix("192.168.77.0/24")})
	tests := []struct {
		addr    string
		allowed bool
	}{
		{"127.0.0.1", false},
		{"127.1.2.3", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false},
		{"169.254.169.254", false},
		{"::ffff:169.254.169.254", false},
		{"169.254.1.1", false},
		{"fe80::1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"224.0.0.1", false},
		{"ff02::1", false},
		{"255.255.255.255", false},
		{"64:ff9b::a9fe:a9fe", false}, // NAT64 of 169.254.169.254
		{"10.240.0.1", false},         // the overlay supernet
		{"10.255.255.254", false},
		{"192.168.77.10", false}, // a VM network
		{"127.0.0.53", true},     // the operator's exception wins
		{"10.0.0.5", true},       // private ranges are mirrors' ranges
		{"192.168.1.10", true},
		{"192.168.1.2", false}, // this host's own address
		{"10.0.9.9", true},     // this host's, but allowed
		{"172.16.0.1", true},
		{"93.184.216.34", true},
		{"2001:db8::1", true},
	}
	for _, tt := range tests {
		err := p.check(netip.MustParseAddr(tt.addr))
		if (err == nil) != tt.allowed {
			t.Errorf("check(%s) = %v, want allowed=%v", tt.addr, err, tt.allowed)
		}
	}
	// The cluster's networks follow the control plane's settings.
	p.setCluster([]netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")})
	if p.check(netip.MustParseAddr("10.240.0.1")) != nil || p.check(netip.MustParseAddr("100.64.0.1")) == nil {
		t.Error("setCluster did not replace the cluster's networks")
	}
}

func TestParseCIDRs(t *testing.T) {
	got, err := ParseCIDRs(" 127.0.0.1/32, 10.1.0.0/16,::1 ,")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("::1/128")}
	if len(got) != len(want) {
		t.Fatalf("ParseCIDRs = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ParseCIDRs[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"10.0.0.1/8", "nope", "10.0.0.0/33"} {
		if _, err := ParseCIDRs(bad); err == nil {
			t.Errorf("ParseCIDRs(%q) accepted", bad)
		}
	}
}

// TestEnsureRefusesDeniedDestinations: by default the agent does not
// connect to loopback (by address or by a name resolving to it), and a
// redirect from an allowed origin to a denied one is refused too. The
// denied servers never see a request, and errors quote no response byte.
func TestEnsureRefusesDeniedDestinations(t *testing.T) {
	needQemuImg(t)
	var denied atomic.Int32
	secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		denied.Add(1)
		w.Write([]byte("SECRET-METADATA"))
	}))
	defer secret.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(secret.URL, "http://"))

	t.Run("loopback by default", func(t *testing.T) {
		c := newCache(t, Options{Allow: []netip.Prefix{}})
		for _, u := range []string{secret.URL + "/disk.img", "http://localhost:" + port + "/disk.img", "http://[::ffff:127.0.0.1]:" + port + "/disk.img"} {
			_, err := ensure(t, c, u, "")
			wantCode(t, err, CodeDownloadRefused)
			if !strings.Contains(err.Error(), "download refused: ") || strings.Contains(err.Error(), "SECRET") {
				t.Errorf("%s: err = %v", u, err)
			}
		}
		assertNothingCached(t, c)
	})

	t.Run("redirect to a denied address", func(t *testing.T) {
		// The origin listens on 127.0.0.2, which is allowed; the secret
		// service on 127.0.0.1 is not.
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Skipf("cannot listen on 127.0.0.2: %v", err)
		}
		origin := httptest.NewUnstartedServer(http.RedirectHandler(secret.URL+"/latest/meta-data", http.StatusFound))
		origin.Listener.Close()
		origin.Listener = ln
		origin.Start()
		defer origin.Close()
		c := newCache(t, Options{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
		_, err = ensure(t, c, origin.URL+"/disk.img", "")
		wantCode(t, err, CodeDownloadRefused)
		if !strings.Contains(err.Error(), "127.0.0.1") || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("err = %v, want it to name the refused address only", err)
		}
		assertNothingCached(t, c)
	})

	t.Run("the default supernet before settings arrive", func(t *testing.T) {
		c := newCache(t, Options{})
		if err := c.policy.check(defaultSupernet.Addr().Next()); err == nil {
			t.Errorf("a new cache allows %s", defaultSupernet.Addr().Next())
		}
	})
	if n := denied.Load(); n != 0 {
		t.Errorf("the denied server saw %d requests", n)
	}
}

// TestEnsureRefusesHostAddress: a server on one of this host's own
// non-loopback addresses is refused like loopback, unless allowed.
func TestEnsureRefusesHostAddress(t *testing.T) {
	needQemuImg(t)
	var own netip.Addr
	for _, a := range interfaceAddrs() {
		if a.Is4() && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			own = a
			break
		}
	}
	if !own.IsValid() {
		t.Skip("this host has no non-loopback IPv4 address")
	}
	srv := serveOn(t, net.JoinHostPort(own.String(), "0"), serveBytes(rawDisk(t, 64<<10)))
	c := newCache(t, Options{Allow: []netip.Prefix{}})
	_, err := ensure(t, c, srv.URL+"/disk.img", "")
	wantCode(t, err, CodeDownloadRefused)
	if !strings.Contains(err.Error(), "an address of this host") {
		t.Errorf("err = %v", err)
	}
	c = newCache(t, Options{Allow: []netip.Prefix{netip.PrefixFrom(own, 32)}})
	if _, err := ensure(t, c, srv.URL+"/disk.img", ""); err != nil {
		t.Errorf("allowed host address: %v", err)
	}
}
