//go:build etcd

package gateway_test

import (
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

// TestAgentVersionSkew: a control plane at 1.4.0 enrolls and hears agents of
// 1.4.x and 1.3.x; an agent newer than it, or two minors behind, is refused
// with version_skew at enrollment (the token stays usable) and at every
// heartbeat, and a refused heartbeat changes nothing the node row says.
func TestAgentVersionSkew(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	cfg := fastJobs()
	cfg.Version = "1.4.0"
	cfg.Nodes = gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute, Now: clock.Now}
	g, st := startGateway(t, cfg)
	if _, err := st.SeedSettings(t.Context(), messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	tok := joinToken(t, g, messages.CreateJoinTokenRequest{})
	req := messages.EnrollRequest{Token: tok, Name: "n1", CSR: csrPEM(t, "n1"), Arch: "amd64", AgentVersion: "1.5.0"}
	_, err := g.Enroll(ctx, req, "192.0.2.7")
	e := wantCode(t, err, "version_skew")
	if e.Kind != messages.KindConflict || e.Details["agent_version"] != "1.5.0" || e.Details["control_plane_version"] != "1.4.0" {
		t.Fatalf("newer agent's enrollment refused with %+v", e)
	}
	req.AgentVersion = "1.2.9"
	_, err = g.Enroll(ctx, req, "192.0.2.7")
	wantCode(t, err, "version_skew")
	req.AgentVersion = "1.4.2"
	resp, err := g.Enroll(ctx, req, "192.0.2.7")
	if err != nil {
		t.Fatalf("the same token with an agent of 1.4.2: %v", err)
	}
	cert := parseCert(t, []byte(resp.Certificate))

	beat := func(version string) error {
		hb := observed(2)
		hb.AgentVersion = version
		_, err := g.Heartbeat(ctx, cert, hb)
		return err
	}
	for _, v := range []string{"1.4.2", "1.3.0", "dev"} {
		if err := beat(v); err != nil {
			t.Fatalf("heartbeat of agent %s: %v", v, err)
		}
	}
	if err := beat("1.3.0"); err != nil {
		t.Fatal(err)
	}
	before := rowVersion(t, st, resp.Node.ID)
	for _, v := range []string{"1.5.0", "2.0.0", "1.2.0"} {
		wantCode(t, beat(v), "version_skew")
	}
	if after := rowVersion(t, st, resp.Node.ID); after != before {
		t.Fatalf("refused heartbeats wrote the node row (version %d -> %d)", before, after)
	}
	if n := nodePhase(t, g, "n1"); n.AgentVersion != "1.3.0" {
		t.Fatalf("node shows agent version %q after refused heartbeats, want the last accepted 1.3.0", n.AgentVersion)
	}
}
