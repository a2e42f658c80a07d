//go:build etcd

package gateway_test

import (
	"context"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

var adminPrincipal = messages.Principal{UserID: "admin-id", Role: "admin"}

func joinToken(t *testing.T, g *gateway.Gateway, req messages.CreateJoinTokenRequest) string {
	t.Helper()
	created, err := g.CreateJoinToken(t.Context(), adminPrincipal, req)
	if err != nil {
		t.Fatalf("create join token: %v", err)
	}
	if !strings.HasSuffix(created.Token, "@"+g.CAFingerprint()) || created.JoinToken.NodeName != req.NodeName {
		t.Fatalf("created join token %+v", created)
	}
	return created.Token
}

func csrPEM(t *testing.T, name string) string {
	t.Helper()
	_, der, err := security.NewNodeKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func enroll(g *gateway.Gateway, ctx context.Context, token, name string, csr string) (*messages.EnrollResponse, error) {
	return g.Enroll(ctx, messages.EnrollRequest{Token: token, Name: name, CSR: csr, Arch: "amd64", AgentVersion: "0.1.0"}, "192.0.2.7")
}

func wantInvalidJoinToken(t *testing.T, err error) {
	t.Helper()
	e := wantCode(t, err, "invalid_join_token")
	if e.Kind != messages.KindUnauthenticated || e.Message != "the join token is invalid, expired or already used" {
		t.Fatalf("invalid join token error %+v", e)
	}
}

// TestEnrollThroughGateway: the gateway routes enrollment to package
// enrollment (tested there) with its heartbeat interval, its CA and its
// audit log, and an enrolled node is then read through its actor. Unknown
// and malformed node names are not found.
func TestEnrollThroughGateway(t *testing.T) {
	g, _ := startGateway(t, fastJobs())
	ctx := t.Context()

	tok := joinToken(t, g, messages.CreateJoinTokenRequest{})
	views, _, err := g.ListJoinTokens(ctx, storePage())
	if err != nil || len(views) != 1 || views[0].CreatedBy != adminPrincipal.UserID {
		t.Fatalf("join tokens = %+v, %v", views, err)
	}
	resp, err := enroll(g, ctx, tok, "node-a", csrPEM(t, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	n := resp.Node
	if resp.HeartbeatInterval != "30s" || resp.CA != string(g.CAPEM()) || g.CAFingerprint() != g.CA().Fingerprint() {
		t.Fatalf("enroll response %+v", resp)
	}
	got, err := g.GetNode(ctx, "node-a")
	if err != nil || got.ID != n.ID || got.CertFingerprint != n.CertFingerprint {
		t.Fatalf("get node = %+v, %v", got, err)
	}
	if _, err := g.GetNode(ctx, "nope"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("unknown node: %v", err)
	}
	if _, err := g.GetNode(ctx, "../x"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bad node name: %v", err)
	}
	nodes, _, err := g.ListNodes(ctx, storePage())
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes = %v, %v", nodes, err)
	}
	if views, _, _ := g.ListJoinTokens(ctx, storePage()); len(views) != 0 {
		t.Fatalf("used token still listed: %+v", views)
	}
	_, err = enroll(g, ctx, tok, "node-b", csrPEM(t, "node-b"))
	wantInvalidJoinToken(t, err)

	tok2 := joinToken(t, g, messages.CreateJoinTokenRequest{NodeName: "a"})
	_, err = enroll(g, ctx, tok2, "b", csrPEM(t, "b"))
	wantCode(t, err, "node_name_not_allowed")
	id2 := strings.TrimPrefix(tok2, security.JoinTokenPrefix)[:security.TokenIDLen]
	if err := g.RevokeJoinToken(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if !auditHas(t, g, "node.enroll", "node-a", "ok") {
		t.Error("no node.enroll audit entry")
	}
	if !auditHas(t, g, "node.enroll", "b", "node_name_not_allowed") {
		t.Error("no audit entry for a refused enrollment")
	}
	if !auditHas(t, g, "node.join_token.create", id2, "ok") {
		t.Error("no audit entry for a join token")
	}
}

func storePage() store.Page { return store.Page{} }
