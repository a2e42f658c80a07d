//go:build etcd

package main

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/storetest"
	"github.com/otherix/otherix/security"
)

// TestCLIClusterSettingsAndHostConflict: a node whose agent refused its
// data plane over the host's resolver says so in node describe; cluster
// settings get shows the defaults; set refuses a supernet over that
// resolver naming node and prefix, and takes a clear one.
func TestCLIClusterSettingsAndHostConflict(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	gw, err := gateway.Start(ctx, storetest.New(t), gateway.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	if _, _, err := gw.BootstrapAdmin(ctx, adminEmail, adminPassword); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(server.Config{}, gw, log).Handler())
	t.Cleanup(srv.Close)
	c := newCLI(t, srv.URL)

	// An agent on a host whose resolver sits in the supernet it was given.
	tok, err := gw.CreateJoinToken(ctx, messages.Principal{UserID: "admin", Role: "admin"}, messages.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, der, err := security.NewNodeKeyAndCSR("hv1")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := gw.Enroll(ctx, messages.EnrollRequest{Token: tok.Token, Name: "hv1",
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}, "192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(resp.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	hb := messages.Heartbeat{AgentVersion: "0.1.0", Arch: "amd64", Capacity: messages.NodeCapacity{CPUs: 2, MemoryMiB: 2048, Accelerator: "tcg"},
		Overlay: &messages.NodeOverlay{PublicKey: base64.StdEncoding.EncodeToString(make([]byte, 32)), Endpoint: "192.0.2.7:51820", WireGuard: "userspace",
			Error: "netfabric: refused", Conflicts: []messages.HostConflict{{Prefix: "10.240.0.0/12", Use: "overlay supernet on oxwg0",
				Taken: "10.255.255.53/32", Source: "resolver /etc/resolv.conf"}}},
		HostPrefixes: []messages.HostPrefix{{Prefix: "10.255.255.53/32", Source: "resolver /etc/resolv.conf"}}}
	if _, err := gw.Heartbeat(ctx, cert, hb); err != nil {
		t.Fatal(err)
	}

	out := c.ok("node", "describe", "hv1")
	for _, want := range []string{"HostNetworkConflict", "True", "PrefixOverlapsHost",
		"overlay supernet on oxwg0 10.240.0.0/12 overlaps 10.255.255.53/32 (resolver /etc/resolv.conf)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("node describe lacks %q:\n%s", want, out)
		}
	}
	out = c.ok("cluster", "settings", "get")
	// Columns are aligned to the longest key: compare words, not spaces.
	words := strings.Join(strings.Fields(out), " ")
	if !strings.Contains(words, "overlay_supernet 100.87.0.0/16") || !strings.Contains(words, "wireguard_port 51820") ||
		!strings.Contains(words, "event_retention_count 10000") || !strings.Contains(words, "event_retention_age 168h") {
		t.Fatalf("settings get:\n%s", out)
	}
	if out := c.ok("cluster", "settings", "set", "event_retention_count=500", "event_retention_age=24h"); !strings.Contains(out, "event_retention_count 10000→500") {
		t.Fatalf("settings set of the event retention: %s", out)
	}
	c.fails("event_retention_age", "cluster", "settings", "set", "event_retention_age=1s")
	stderr := c.fails("supernet_host_conflict", "cluster", "settings", "set", "overlay_supernet=10.240.0.0/12")
	if !strings.Contains(stderr, "10.255.255.53/32 (resolver /etc/resolv.conf) on node hv1") {
		t.Fatalf("refusal does not say what collides:\n%s", stderr)
	}
	if code, _, stderr := c.run("cluster", "settings", "set", "overlay=1"); code != 2 || !strings.Contains(stderr, `unknown setting "overlay"`) {
		t.Fatalf("unknown key: exit %d, %s", code, stderr)
	}
	out = c.ok("cluster", "settings", "set", "overlay_supernet=100.64.128.0/20", "vni_range=4096-8191")
	if !strings.Contains(out, "overlay_supernet 100.87.0.0/16→100.64.128.0/20") || !strings.Contains(out, "vni_range 4096-16777215→4096-8191") {
		t.Fatalf("settings set:\n%s", out)
	}
	if out := c.ok("cluster", "settings", "get", "-o", "json"); !strings.Contains(out, `"overlay_supernet": "100.64.128.0/20"`) {
		t.Fatalf("settings get -o json:\n%s", out)
	}
}
