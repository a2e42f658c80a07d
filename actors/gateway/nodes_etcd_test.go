//go:build etcd

package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/identity"
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

// TestCAShared: two gateways on one store share one CA.
func TestCAShared(t *testing.T) {
	g, st := startGateway(t, fastJobs())
	cfg := fastJobs()
	cfg.Replica = "second"
	cfg.CleanupInterval = time.Hour
	g2, err := gateway.Start(t.Context(), st, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g2.Close)
	if g.CAFingerprint() != g2.CAFingerprint() || len(g.CAFingerprint()) != 64 || string(g.CAPEM()) != string(g2.CA().CertPEM()) {
		t.Fatalf("fingerprints %s and %s differ", g.CAFingerprint(), g2.CAFingerprint())
	}
	// A token made on one replica enrolls on the other.
	tok := joinToken(t, g, messages.CreateJoinTokenRequest{})
	if _, err := enroll(g2, t.Context(), tok, "n1", csrPEM(t, "n1")); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollLifecycle(t *testing.T) {
	clock := newTestClock()
	g, _ := startIdentity(t, identity.Config{Now: clock.Now})
	ctx := t.Context()

	tok := joinToken(t, g, messages.CreateJoinTokenRequest{})
	views, _, err := g.ListJoinTokens(ctx, storePage())
	if err != nil || len(views) != 1 || views[0].CreatedBy != adminPrincipal.UserID ||
		views[0].ExpiresAt.Sub(views[0].CreatedAt) != time.Hour {
		t.Fatalf("join tokens = %+v, %v", views, err)
	}
	resp, err := enroll(g, ctx, tok, "node-a", csrPEM(t, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	n := resp.Node
	if n.Name != "node-a" || n.Phase != messages.NodePending || n.Arch != "amd64" || n.AgentVersion != "0.1.0" ||
		n.ID == "" || n.EnrolledAt.IsZero() || resp.HeartbeatInterval != "30s" || resp.CA != string(g.CAPEM()) {
		t.Fatalf("enroll response %+v", resp)
	}
	block, _ := pem.Decode([]byte(resp.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := security.VerifyNodeCert(g.CA(), cert, time.Now()); err != nil {
		t.Fatalf("issued cert: %v", err)
	}
	if security.Fingerprint(cert) != n.CertFingerprint || !cert.NotAfter.Equal(n.CertNotAfter) {
		t.Fatalf("node records fingerprint %s / %v, cert has %s / %v", n.CertFingerprint, n.CertNotAfter,
			security.Fingerprint(cert), cert.NotAfter)
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

	// Reuse of the token.
	_, err = enroll(g, ctx, tok, "node-b", csrPEM(t, "node-b"))
	wantInvalidJoinToken(t, err)

	// Forged secret: same id, another secret.
	tok2 := joinToken(t, g, messages.CreateJoinTokenRequest{})
	at := strings.IndexByte(tok2, '.')
	forged := tok2[:at+1] + strings.Repeat("A", security.TokenSecretLen) + tok2[at+1+security.TokenSecretLen:]
	_, err = enroll(g, ctx, forged, "node-b", csrPEM(t, "node-b"))
	wantInvalidJoinToken(t, err)
	// Wrong CA fingerprint in an otherwise valid token.
	other, err := security.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, err = enroll(g, ctx, tok2[:strings.IndexByte(tok2, '@')+1]+other.Fingerprint(), "node-b", csrPEM(t, "node-b"))
	wantInvalidJoinToken(t, err)
	// Garbage.
	_, err = enroll(g, ctx, "otxj_nonsense", "node-b", csrPEM(t, "node-b"))
	wantInvalidJoinToken(t, err)
	// Neither refusal consumed the token.
	if _, err := enroll(g, ctx, tok2, "node-b", csrPEM(t, "node-b")); err != nil {
		t.Fatalf("genuine token after forgeries: %v", err)
	}

	// Expired.
	tok3 := joinToken(t, g, messages.CreateJoinTokenRequest{TTL: "10m"})
	clock.Add(11 * time.Minute)
	_, err = enroll(g, ctx, tok3, "node-c", csrPEM(t, "node-c"))
	wantInvalidJoinToken(t, err)

	// Restricted to a name.
	tok4 := joinToken(t, g, messages.CreateJoinTokenRequest{NodeName: "a"})
	_, err = enroll(g, ctx, tok4, "b", csrPEM(t, "b"))
	if e := wantCode(t, err, "node_name_not_allowed"); e.Kind != messages.KindForbidden {
		t.Fatalf("kind %v", e.Kind)
	}
	// CSR for another name than the one asked for.
	_, err = enroll(g, ctx, tok4, "a", csrPEM(t, "b"))
	if e := wantCode(t, err, "csr_policy"); e.Kind != messages.KindInvalid || e.Details["reason"] != security.ReasonCNMismatch {
		t.Fatalf("csr policy error %+v", e)
	}
	_, err = enroll(g, ctx, tok4, "a", "not a pem")
	if e := wantCode(t, err, "csr_policy"); e.Details["reason"] != security.ReasonMalformedCSR {
		t.Fatalf("csr policy error %+v", e)
	}
	// A weak key.
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node-a"}}, key)
	_, err = enroll(g, ctx, tok4, "a", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	if e := wantCode(t, err, "csr_policy"); e.Details["reason"] != security.ReasonWeakKey {
		t.Fatalf("csr policy error %+v", e)
	}
	if _, err := enroll(g, ctx, tok4, "a", csrPEM(t, "a")); err != nil {
		t.Fatalf("restricted token, right name: %v", err)
	}

	// Same name again with a new token.
	tok5 := joinToken(t, g, messages.CreateJoinTokenRequest{})
	_, err = enroll(g, ctx, tok5, "node-a", csrPEM(t, "node-a"))
	if e := wantCode(t, err, "node_name_conflict"); e.Kind != messages.KindConflict {
		t.Fatalf("kind %v", e.Kind)
	}
	// An invalid name.
	_, err = enroll(g, ctx, tok5, "Node_A", csrPEM(t, "node-a"))
	if messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("invalid name: %v", err)
	}

	// Revoke.
	views, _, _ = g.ListJoinTokens(ctx, storePage())
	if len(views) != 2 { // tok3 (expired, not yet swept) and tok5
		t.Fatalf("join tokens = %+v", views)
	}
	id5 := strings.TrimPrefix(tok5, security.JoinTokenPrefix)[:security.TokenIDLen]
	if err := g.RevokeJoinToken(ctx, id5); err != nil {
		t.Fatal(err)
	}
	if err := g.RevokeJoinToken(ctx, id5); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("second revoke: %v", err)
	}
	if err := g.RevokeJoinToken(ctx, "x/y"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bad id revoke: %v", err)
	}
	_, err = enroll(g, ctx, tok5, "node-e", csrPEM(t, "node-e"))
	wantInvalidJoinToken(t, err)

	if !auditHas(t, g, "node.enroll", "node-a", "ok") {
		t.Error("no node.enroll audit entry")
	}
	if !auditHas(t, g, "node.enroll", "b", "node_name_not_allowed") {
		t.Error("no audit entry for a refused enrollment")
	}
}

func TestCreateJoinTokenBadInput(t *testing.T) {
	g, _ := startGateway(t, fastJobs())
	for _, ttl := range []string{"25h", "0s", "-1h", "soon"} {
		_, err := g.CreateJoinToken(t.Context(), adminPrincipal, messages.CreateJoinTokenRequest{TTL: ttl})
		wantCode(t, err, "invalid_ttl")
	}
	_, err := g.CreateJoinToken(t.Context(), adminPrincipal, messages.CreateJoinTokenRequest{NodeName: "Bad_Name"})
	if messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("bad node name: %v", err)
	}
	if _, err := g.CreateJoinToken(t.Context(), adminPrincipal, messages.CreateJoinTokenRequest{TTL: "24h"}); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentEnrollOneToken: of two enrollments racing with one token,
// exactly one succeeds; the other sees an invalid token.
func TestConcurrentEnrollOneToken(t *testing.T) {
	g, _ := startGateway(t, fastJobs())
	for round := range 5 {
		tok := joinToken(t, g, messages.CreateJoinTokenRequest{})
		names := []string{"r" + string(rune('a'+round)) + "1", "r" + string(rune('a'+round)) + "2"}
		csrs := []string{csrPEM(t, names[0]), csrPEM(t, names[1])}
		var ok, refused atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 2 {
			wg.Go(func() {
				<-start
				_, err := enroll(g, t.Context(), tok, names[i], csrs[i])
				var e *messages.Error
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &e) && e.Code == "invalid_join_token":
					refused.Add(1)
				default:
					t.Errorf("enroll: %v", err)
				}
			})
		}
		close(start)
		wg.Wait()
		if ok.Load() != 1 || refused.Load() != 1 {
			t.Fatalf("round %d: %d succeeded, %d refused", round, ok.Load(), refused.Load())
		}
	}
	nodes, _, err := g.ListNodes(t.Context(), storePage())
	if err != nil || len(nodes) != 5 {
		t.Fatalf("nodes = %d, %v", len(nodes), err)
	}
}

func storePage() store.Page { return store.Page{} }
