//go:build etcd

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/http/agentclient/agenttest"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/storetest"
	"github.com/otherix/otherix/security"
)

// TestCLIImageListAndDelete: otherix image list and image delete over the
// real API, store and mTLS agent client, against fake agents' caches: one
// node answers, one does not; a delete by name resolves the alias, one by a
// used image is refused with image_in_use; a non-admin is refused.
func TestCLIImageListAndDelete(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	pki := agenttest.NewPKI(t)
	clientCert := pki.ClientCert(t)
	gw, err := gateway.Start(ctx, storetest.New(t), gateway.Config{
		Calls:          agentclient.New(pki.CA.Pool(), func() (*tls.Certificate, error) { return &clientCert, nil }),
		JobBackoffBase: 20 * time.Millisecond, JobBackoffMax: 50 * time.Millisecond, JobAttempts: 2,
		Nodes: gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute}}, log)
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

	agents := map[string]*agenttest.Agent{}
	for _, name := range []string{"hv1", "hv2"} {
		agents[name] = agenttest.Start(t, pki, name, nil)
		tok, err := gw.CreateJoinToken(ctx, messages.Principal{UserID: "admin", Role: "admin"}, messages.CreateJoinTokenRequest{})
		if err != nil {
			t.Fatal(err)
		}
		_, der, err := security.NewNodeKeyAndCSR(name)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := gw.Enroll(ctx, messages.EnrollRequest{Token: tok.Token, Name: name,
			CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}, "192.0.2.7")
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(resp.Certificate))
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		hb := messages.Heartbeat{AgentVersion: "0.1.0", Arch: "amd64", Endpoint: agents[name].URL,
			Capacity: messages.NodeCapacity{CPUs: 4, MemoryMiB: 8192, Accelerator: "tcg"}}
		if _, err := gw.Heartbeat(ctx, cert, hb); err != nil {
			t.Fatal(err)
		}
	}
	used := strings.Repeat("a", 64)
	free := strings.Repeat("b", 64)
	last := time.Now().UTC().Add(-3 * time.Hour)
	agents["hv1"].SetImages([]messages.NodeImage{
		{Pool: "default", SHA256: used, Aliases: []string{"debian-12.qcow2"}, SizeBytes: 512 << 20, VirtualSizeBytes: 2 << 30,
			LastUsed: &last, VMs: []string{"vm-one"}},
		{Pool: "default", SHA256: free, Aliases: []string{"alpine\x1b[31m.img"}, SizeBytes: 3 << 20, VMs: []string{}},
	})
	agents["hv2"].SetDown(true)

	out := c.ok("image", "list")
	for _, want := range []string{"debian-12.qcow2", "aaaaaaaaaaaa ", "512.0Mi", "3h ago", "vm-one", "hv2", "<not answering: node_unreachable>"} {
		if !strings.Contains(out, want) {
			t.Errorf("image list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("an alias's escape sequence reached the terminal:\n%q", out)
	}
	var l messages.NodeImagesList
	if err := json.Unmarshal([]byte(c.ok("image", "list", "--node", "hv1", "-o", "json")), &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Items[0].Node != "hv1" || len(l.Items[0].Images) != 2 {
		t.Fatalf("image list --node hv1 -o json: %+v", l)
	}

	c.fails("image_in_use", "image", "delete", "debian-12.qcow2", "--node", "hv1")
	if code, _, stderr := c.run("image", "delete", free); code != 2 || !strings.Contains(stderr, "--node is required") {
		t.Errorf("delete without --node: exit %d, %s", code, stderr)
	}
	c.fails("caches no image named", "image", "delete", "nosuch.img", "--node", "hv1")
	if out := c.ok("image", "delete", free, "--node", "hv1"); !strings.Contains(out, "deleted from node hv1") {
		t.Errorf("delete said %q", out)
	}
	if imgs := agents["hv1"].Images(); len(imgs) != 1 || imgs[0].SHA256 != used {
		t.Errorf("hv1 caches %+v after the delete", imgs)
	}
	c.fails("image_not_found", "image", "delete", free, "--node", "hv1")

	// Image caches are the admin's: an operator is refused, and the agent
	// is not asked.
	c.stdin = "operator-password-1\n"
	c.ok("user", "create", "op@example.com", "--role", "operator", "--display-name", "Op", "--password-stdin")
	c.login(srv.URL, "op@example.com", "operator-password-1", "--context", "op")
	c.fails("[forbidden]", "image", "list")
	c.fails("[forbidden]", "image", "delete", used, "--node", "hv1")
	if imgs := agents["hv1"].Images(); len(imgs) != 1 {
		t.Errorf("hv1 caches %+v after a refused delete", imgs)
	}
}
