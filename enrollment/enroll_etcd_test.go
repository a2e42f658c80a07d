//go:build etcd

package enrollment_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/enrollment"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// TestCAShared: two replicas on one store share one CA.
func TestCAShared(t *testing.T) {
	s, st, clock, _ := start(t)
	s2, _ := newService(t, st, clock)
	if s.CA().Fingerprint() != s2.CA().Fingerprint() || len(s.CA().Fingerprint()) != 64 ||
		string(s.CA().CertPEM()) != string(s2.CA().CertPEM()) {
		t.Fatalf("fingerprints %s and %s differ", s.CA().Fingerprint(), s2.CA().Fingerprint())
	}
	// A token made on one replica enrolls on the other.
	tok := joinToken(t, s, messages.CreateJoinTokenRequest{})
	if _, err := enroll(s2, t.Context(), tok, "n1", csrPEM(t, "n1")); err != nil {
		t.Fatal(err)
	}
}

func TestEnrollLifecycle(t *testing.T) {
	s, st, clock, audit := start(t)
	ctx := t.Context()

	tok := joinToken(t, s, messages.CreateJoinTokenRequest{})
	views, _, err := s.ListJoinTokens(ctx, storePage())
	if err != nil || len(views) != 1 || views[0].CreatedBy != adminPrincipal.UserID ||
		views[0].ExpiresAt.Sub(views[0].CreatedAt) != time.Hour {
		t.Fatalf("join tokens = %+v, %v", views, err)
	}
	resp, err := enroll(s, ctx, tok, "node-a", csrPEM(t, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	n := resp.Node
	if n.Name != "node-a" || n.Phase != messages.NodePending || n.Arch != "amd64" || n.AgentVersion != "0.1.0" ||
		n.ID == "" || n.EnrolledAt.IsZero() || resp.HeartbeatInterval != "30s" || resp.CA != string(s.CA().CertPEM()) {
		t.Fatalf("enroll response %+v", resp)
	}
	block, _ := pem.Decode([]byte(resp.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := security.VerifyNodeCert(s.CA(), cert, time.Now()); err != nil {
		t.Fatalf("issued cert: %v", err)
	}
	if security.Fingerprint(cert) != n.CertFingerprint || !cert.NotAfter.Equal(n.CertNotAfter) {
		t.Fatalf("node records fingerprint %s / %v, cert has %s / %v", n.CertFingerprint, n.CertNotAfter,
			security.Fingerprint(cert), cert.NotAfter)
	}
	got, err := st.NodeByName(ctx, "node-a")
	if err != nil || got.ID != n.ID || got.CertFingerprint != n.CertFingerprint || got.Phase != messages.NodePending {
		t.Fatalf("node row = %+v, %v", got, err)
	}
	nodes, _, err := st.ListNodes(ctx, storePage())
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes = %v, %v", nodes, err)
	}
	if views, _, _ := s.ListJoinTokens(ctx, storePage()); len(views) != 0 {
		t.Fatalf("used token still listed: %+v", views)
	}

	// Reuse of the token.
	_, err = enroll(s, ctx, tok, "node-b", csrPEM(t, "node-b"))
	wantInvalidJoinToken(t, err)

	// Forged secret: same id, another secret.
	tok2 := joinToken(t, s, messages.CreateJoinTokenRequest{})
	at := strings.IndexByte(tok2, '.')
	forged := tok2[:at+1] + strings.Repeat("A", security.TokenSecretLen) + tok2[at+1+security.TokenSecretLen:]
	_, err = enroll(s, ctx, forged, "node-b", csrPEM(t, "node-b"))
	wantInvalidJoinToken(t, err)
	// Wrong CA fingerprint in an otherwise valid token.
	other, err := security.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, err = enroll(s, ctx, tok2[:strings.IndexByte(tok2, '@')+1]+other.Fingerprint(), "node-b", csrPEM(t, "node-b"))
	wantInvalidJoinToken(t, err)
	// Garbage.
	_, err = enroll(s, ctx, "otxj_nonsense", "node-b", csrPEM(t, "node-b"))
	wantInvalidJoinToken(t, err)
	// Neither refusal consumed the token.
	if _, err := enroll(s, ctx, tok2, "node-b", csrPEM(t, "node-b")); err != nil {
		t.Fatalf("genuine token after forgeries: %v", err)
	}

	// Expired.
	tok3 := joinToken(t, s, messages.CreateJoinTokenRequest{TTL: "10m"})
	clock.Add(11 * time.Minute)
	_, err = enroll(s, ctx, tok3, "node-c", csrPEM(t, "node-c"))
	wantInvalidJoinToken(t, err)

	// Restricted to a name.
	tok4 := joinToken(t, s, messages.CreateJoinTokenRequest{NodeName: "a"})
	_, err = enroll(s, ctx, tok4, "b", csrPEM(t, "b"))
	if e := wantCode(t, err, "node_name_not_allowed"); e.Kind != messages.KindForbidden {
		t.Fatalf("kind %v", e.Kind)
	}
	// CSR for another name than the one asked for.
	_, err = enroll(s, ctx, tok4, "a", csrPEM(t, "b"))
	if e := wantCode(t, err, "csr_policy"); e.Kind != messages.KindInvalid || e.Details["reason"] != security.ReasonCNMismatch {
		t.Fatalf("csr policy error %+v", e)
	}
	_, err = enroll(s, ctx, tok4, "a", "not a pem")
	if e := wantCode(t, err, "csr_policy"); e.Details["reason"] != security.ReasonMalformedCSR {
		t.Fatalf("csr policy error %+v", e)
	}
	// A weak key.
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node-a"}}, key)
	_, err = enroll(s, ctx, tok4, "a", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	if e := wantCode(t, err, "csr_policy"); e.Details["reason"] != security.ReasonWeakKey {
		t.Fatalf("csr policy error %+v", e)
	}
	if _, err := enroll(s, ctx, tok4, "a", csrPEM(t, "a")); err != nil {
		t.Fatalf("restricted token, right name: %v", err)
	}

	// Same name again with a new token.
	tok5 := joinToken(t, s, messages.CreateJoinTokenRequest{})
	_, err = enroll(s, ctx, tok5, "node-a", csrPEM(t, "node-a"))
	if e := wantCode(t, err, "node_name_conflict"); e.Kind != messages.KindConflict {
		t.Fatalf("kind %v", e.Kind)
	}
	// An invalid name.
	_, err = enroll(s, ctx, tok5, "Node_A", csrPEM(t, "node-a"))
	if messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("invalid name: %v", err)
	}

	// Revoke.
	views, _, _ = s.ListJoinTokens(ctx, storePage())
	if len(views) != 2 { // tok3 (expired, not yet swept) and tok5
		t.Fatalf("join tokens = %+v", views)
	}
	id5 := strings.TrimPrefix(tok5, security.JoinTokenPrefix)[:security.TokenIDLen]
	if err := s.RevokeJoinToken(ctx, id5); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeJoinToken(ctx, id5); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("second revoke: %v", err)
	}
	if err := s.RevokeJoinToken(ctx, "x/y"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bad id revoke: %v", err)
	}
	_, err = enroll(s, ctx, tok5, "node-e", csrPEM(t, "node-e"))
	wantInvalidJoinToken(t, err)

	if !audit.has("node.enroll", "node-a", "ok") {
		t.Error("no node.enroll audit entry")
	}
	if !audit.has("node.enroll", "b", "node_name_not_allowed") {
		t.Error("no audit entry for a refused enrollment")
	}
}

func TestCreateJoinTokenBadInput(t *testing.T) {
	s, _, _, _ := start(t)
	for _, ttl := range []string{"25h", "0s", "-1h", "soon"} {
		_, err := s.CreateJoinToken(t.Context(), adminPrincipal, messages.CreateJoinTokenRequest{TTL: ttl})
		wantCode(t, err, "invalid_ttl")
	}
	_, err := s.CreateJoinToken(t.Context(), adminPrincipal, messages.CreateJoinTokenRequest{NodeName: "Bad_Name"})
	if messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("bad node name: %v", err)
	}
	if _, err := s.CreateJoinToken(t.Context(), adminPrincipal, messages.CreateJoinTokenRequest{TTL: "24h"}); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentEnrollOneToken: of two enrollments racing with one token,
// exactly one succeeds; the other sees an invalid token.
func TestConcurrentEnrollOneToken(t *testing.T) {
	s, st, _, _ := start(t)
	for round := range 5 {
		tok := joinToken(t, s, messages.CreateJoinTokenRequest{})
		names := []string{"r" + string(rune('a'+round)) + "1", "r" + string(rune('a'+round)) + "2"}
		csrs := []string{csrPEM(t, names[0]), csrPEM(t, names[1])}
		var ok, refused atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 2 {
			wg.Go(func() {
				<-start
				_, err := enroll(s, t.Context(), tok, names[i], csrs[i])
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
	nodes, _, err := st.ListNodes(t.Context(), storePage())
	if err != nil || len(nodes) != 5 {
		t.Fatalf("nodes = %d, %v", len(nodes), err)
	}
}

// TestSweepJoinTokens: the sweep removes expired tokens (on the store's
// clock) and keeps the others.
func TestSweepJoinTokens(t *testing.T) {
	s, _, clock, _ := start(t)
	ctx := t.Context()
	clock.Add(-2 * time.Hour) // created two hours ago: expired an hour ago
	joinToken(t, s, messages.CreateJoinTokenRequest{})
	clock.Add(2 * time.Hour)
	live := joinToken(t, s, messages.CreateJoinTokenRequest{})
	if err := s.SweepJoinTokens(ctx); err != nil {
		t.Fatal(err)
	}
	views, _, err := s.ListJoinTokens(ctx, storePage())
	if err != nil || len(views) != 1 || !strings.HasPrefix(live, security.JoinTokenPrefix+views[0].ID+".") {
		t.Fatalf("after the sweep: %+v %v", views, err)
	}
}

// TestEnrollRefusesReservedName: a node named join-tokens could never be
// read (/v1/nodes/join-tokens lists the tokens); it is refused, and the
// token stays usable for another name.
func TestEnrollRefusesReservedName(t *testing.T) {
	s, _, _, _ := start(t)
	ctx := t.Context()
	tok := joinToken(t, s, messages.CreateJoinTokenRequest{})
	_, err := enroll(s, ctx, tok, enrollment.ReservedNodeName, csrPEM(t, enrollment.ReservedNodeName))
	var me *messages.Error
	if !errors.As(err, &me) || me.Code != "invalid_field" || me.Details["field"] != "name" {
		t.Fatalf("enroll as join-tokens: %v", err)
	}
	if _, err := enroll(s, ctx, tok, "node-b", csrPEM(t, "node-b")); err != nil {
		t.Fatalf("the token after the refusal: %v", err)
	}
}
