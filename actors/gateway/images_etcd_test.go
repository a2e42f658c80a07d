//go:build etcd

package gateway_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/http/agentclient/agenttest"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

// startImageNodes runs a gateway whose agent calls go over mTLS to fake
// agents of pki, and makes each name a ready node at its agent's endpoint.
func startImageNodes(t *testing.T, names ...string) (*gateway.Gateway, map[string]*agenttest.Agent) {
	t.Helper()
	pki := agenttest.NewPKI(t)
	clientCert := pki.ClientCert(t)
	cfg := fastJobs()
	clock := testutil.NewClock(time.Now())
	cfg.Nodes = gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute, Now: clock.Now}
	cfg.Calls = agentclient.New(pki.CA.Pool(), func() (*tls.Certificate, error) { return &clientCert, nil })
	g, st := startGateway(t, cfg)
	if _, err := st.SeedSettings(t.Context(), messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	agents := map[string]*agenttest.Agent{}
	for _, name := range names {
		a := agenttest.Start(t, pki, name, nil)
		agents[name] = a
		_, cert := enrollNode(t, g, name)
		hb := observed(4)
		hb.Endpoint = a.URL
		if _, err := g.Heartbeat(t.Context(), cert, hb); err != nil {
			t.Fatal(err)
		}
		if n := nodePhase(t, g, name); n.Phase != messages.NodeReady {
			t.Fatalf("node %s is %s", name, n.Phase)
		}
	}
	return g, agents
}

func sha(c byte) string { return strings.Repeat(string(c), 64) }

func TestListImagesPerNode(t *testing.T) {
	g, agents := startImageNodes(t, "a", "b", "c")
	used := messages.NodeImage{Pool: "default", SHA256: sha('1'), Aliases: []string{"debian-12.qcow2"}, SizeBytes: 1 << 30, VMs: []string{"vm-1"}}
	free := messages.NodeImage{Pool: "default", SHA256: sha('2'), Aliases: []string{"alpine.img"}, SizeBytes: 1 << 20, VMs: []string{}}
	agents["a"].SetImages([]messages.NodeImage{used, free})
	agents["b"].SetImages([]messages.NodeImage{free})
	agents["c"].Close() // c does not answer

	all, err := g.ListImages(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].Node != "a" || all[1].Node != "b" || all[2].Node != "c" {
		t.Fatalf("items %+v: want a, b, c in order", all)
	}
	if len(all[0].Images) != 2 || all[0].Images[0].SHA256 != used.SHA256 || all[0].Error != nil {
		t.Errorf("node a: %+v", all[0])
	}
	if len(all[1].Images) != 1 || all[1].Error != nil {
		t.Errorf("node b: %+v", all[1])
	}
	if all[2].Error == nil || all[2].Error.Code != "node_unreachable" || len(all[2].Images) != 0 {
		t.Errorf("node c: %+v, want node_unreachable", all[2])
	}

	one, err := g.ListImages(t.Context(), "b")
	if err != nil || len(one) != 1 || one[0].Node != "b" || len(one[0].Images) != 1 {
		t.Fatalf("ListImages(b) = %+v, %v", one, err)
	}
	_, err = g.ListImages(t.Context(), "nosuch")
	wantCode(t, err, "not_found")
	_, err = g.ListImages(t.Context(), "../a")
	if messages.KindOf(err) != messages.KindInvalid {
		t.Errorf("ListImages(../a) = %v, want invalid", err)
	}
}

func TestDeleteImageOnNode(t *testing.T) {
	g, agents := startImageNodes(t, "a")
	used := messages.NodeImage{Pool: "default", SHA256: sha('1'), Aliases: []string{"debian-12.qcow2"}, VMs: []string{"vm-1"}}
	free := messages.NodeImage{Pool: "default", SHA256: sha('2'), Aliases: []string{"alpine.img"}, VMs: []string{}}
	agents["a"].SetImages([]messages.NodeImage{used, free})

	e := wantCode(t, g.DeleteImage(t.Context(), "a", used.SHA256), "image_in_use")
	if e.Kind != messages.KindConflict {
		t.Errorf("image_in_use kind %v, want conflict", e.Kind)
	}
	if err := g.DeleteImage(t.Context(), "a", free.SHA256); err != nil {
		t.Fatal(err)
	}
	if left := agents["a"].Images(); len(left) != 1 || left[0].SHA256 != used.SHA256 {
		t.Errorf("agent holds %+v, want only the used image", left)
	}
	e = wantCode(t, g.DeleteImage(t.Context(), "a", free.SHA256), "image_not_found")
	if e.Kind != messages.KindNotFound {
		t.Errorf("image_not_found kind %v", e.Kind)
	}
	if err := g.DeleteImage(t.Context(), "a", "../../x"); messages.KindOf(err) != messages.KindInvalid {
		t.Errorf("a bad digest: %v, want invalid before any call", err)
	}
	wantCode(t, g.DeleteImage(t.Context(), "nosuch", free.SHA256), "not_found")
	agents["a"].SetDown(true)
	wantCode(t, g.DeleteImage(t.Context(), "a", used.SHA256), "node_unreachable")
}
