//go:build etcd

package enrollment_test

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/otherix/otherix/enrollment"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// deleteNode removes a node's row behind the Service's back, as a delete on
// another replica would.
func deleteNode(t *testing.T, st *store.Store, name string) {
	t.Helper()
	n, err := st.NodeByName(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(t.Context(), store.DeleteNode(store.NewTxn(), n)); err != nil {
		t.Fatal(err)
	}
}

// TestAuthenticate: the recorded certificate of an enrolled node is
// accepted; a certificate of an unknown node, one that is not the recorded
// one, one of another CA, and one that is no node certificate are refused.
// A verified identity is reused until forgotten.
func TestAuthenticate(t *testing.T) {
	s, st, _, _ := start(t)
	ctx := t.Context()
	n, cert := enrollNode(t, s, "n1")

	_, der, err := security.NewNodeKeyAndCSR("n1")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := s.CA().SignNodeCSR(der, "n1", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := security.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _, err := other.SignNodeCSR(der, "n1", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	_, ghostDER, err := security.NewNodeKeyAndCSR("ghost")
	if err != nil {
		t.Fatal(err)
	}
	ghostPEM, _, err := s.CA().SignNodeCSR(ghostDER, "ghost", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := s.CA().IssueClientCert(security.ControlPlaneCN, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	cpLeaf, err := x509.ParseCertificate(cp.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		code string
	}{
		{"unknown node", parseCert(t, ghostPEM), "unknown_node"},
		{"unrecorded certificate", parseCert(t, certPEM), "certificate_not_recorded"},
		{"another ca", parseCert(t, otherPEM), "certificate_not_recorded"},
		{"not a node certificate", cpLeaf, "not_node_certificate"},
		{"no certificate", nil, "not_node_certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Authenticate(ctx, tc.cert, time.Now(), "test")
			if e := wantCode(t, err, tc.code); e.Kind != messages.KindUnauthenticated {
				t.Fatalf("kind %v", e.Kind)
			}
		})
	}

	who, err := s.Authenticate(ctx, cert, time.Now(), "test")
	if err != nil || who != (enrollment.NodeIdentity{ID: n.ID, Name: "n1", Fingerprint: n.CertFingerprint}) {
		t.Fatalf("authenticate: %+v %v", who, err)
	}
	// Verified once, the identity is reused: a delete elsewhere is seen
	// once the identity is forgotten (the gateway forgets it when the
	// node's actor says the node is gone).
	deleteNode(t, st, "n1")
	if again, err := s.Authenticate(ctx, cert, time.Now(), "test"); err != nil || again != who {
		t.Fatalf("cached identity: %+v %v", again, err)
	}
	// Not outside the certificate's validity, though.
	if _, err := s.Authenticate(ctx, cert, cert.NotAfter.Add(time.Second), "test"); err == nil {
		t.Fatal("an expired certificate was answered from the cache")
	}
	s.Forget("n1")
	_, err = s.Authenticate(ctx, cert, time.Now(), "test")
	wantCode(t, err, "unknown_node")
}

// TestRenewNodeCert: a renewal over the current certificate signs the
// node's CSR and hands the new certificate to record; a CSR for another
// node or garbage is refused without recording; a failed record fails the
// renewal; a renewal forgets the cached identity.
func TestRenewNodeCert(t *testing.T) {
	s, st, _, _ := start(t)
	ctx := t.Context()
	n, old := enrollNode(t, s, "n1")

	var got []enrollment.Renewal
	record := func(r enrollment.Renewal) error { got = append(got, r); return nil }
	_, err := s.RenewNodeCert(ctx, old, messages.RenewRequest{CSR: csrPEM(t, "n2")}, time.Now(), record)
	if e := wantCode(t, err, "csr_policy"); e.Details["reason"] != security.ReasonCNMismatch {
		t.Fatalf("csr for another node: %+v", e)
	}
	_, err = s.RenewNodeCert(ctx, old, messages.RenewRequest{CSR: "not a csr"}, time.Now(), record)
	if e := wantCode(t, err, "csr_policy"); e.Details["reason"] != security.ReasonMalformedCSR {
		t.Fatalf("garbage: %+v", e)
	}
	if len(got) != 0 {
		t.Fatalf("refused renewals were recorded: %+v", got)
	}
	failed := errors.New("actor gone")
	if _, err := s.RenewNodeCert(ctx, old, messages.RenewRequest{CSR: csrPEM(t, "n1")}, time.Now(),
		func(enrollment.Renewal) error { return failed }); !errors.Is(err, failed) {
		t.Fatalf("failed record: %v", err)
	}

	now := time.Now()
	resp, err := s.RenewNodeCert(ctx, old, messages.RenewRequest{CSR: csrPEM(t, "n1")}, now, record)
	if err != nil {
		t.Fatal(err)
	}
	renewed := parseCert(t, []byte(resp.Certificate))
	if err := security.VerifyNodeCert(s.CA(), renewed, now); err != nil || renewed.Subject.CommonName != "node-n1" ||
		resp.CA != string(s.CA().CertPEM()) {
		t.Fatalf("renewed certificate %s: %v", renewed.Subject.CommonName, err)
	}
	want := enrollment.Renewal{NodeID: n.ID, Presented: n.CertFingerprint, Fingerprint: security.Fingerprint(renewed),
		NotAfter: renewed.NotAfter, Now: now}
	if len(got) != 1 || got[0] != want || want.Fingerprint == n.CertFingerprint {
		t.Fatalf("recorded %+v, want %+v", got, want)
	}
	// The old certificate's identity was verified (and cached) by the
	// renewal itself; the renewal forgot it, so it is checked again.
	deleteNode(t, st, "n1")
	_, err = s.Authenticate(ctx, old, time.Now(), "test")
	wantCode(t, err, "unknown_node")
}

// TestAuthenticateReplacedCertificate: while a node's row still names the
// certificate a renewal replaced, both certificates authenticate; once the
// row forgets it, the replaced one is refused (after the cache is dropped).
func TestAuthenticateReplacedCertificate(t *testing.T) {
	s, st, _, _ := start(t)
	ctx := t.Context()
	_, old := enrollNode(t, s, "n1")
	var renewal enrollment.Renewal
	resp, err := s.RenewNodeCert(ctx, old, messages.RenewRequest{CSR: csrPEM(t, "n1")}, time.Now(),
		func(r enrollment.Renewal) error { renewal = r; return nil })
	if err != nil {
		t.Fatal(err)
	}
	renewed := parseCert(t, []byte(resp.Certificate))
	// Record it as the node's actor does.
	setFingerprints := func(cur, prev string) {
		t.Helper()
		n, err := st.NodeByName(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		n.CertFingerprint, n.PrevCertFingerprint = cur, prev
		if err := st.Commit(ctx, store.UpdateNode(store.NewTxn(), n)); err != nil {
			t.Fatal(err)
		}
		s.Forget("n1")
	}
	setFingerprints(renewal.Fingerprint, renewal.Presented)
	for what, cert := range map[string]*x509.Certificate{"replaced": old, "renewed": renewed} {
		if who, err := s.Authenticate(ctx, cert, time.Now(), "test"); err != nil || who.Fingerprint != security.Fingerprint(cert) {
			t.Fatalf("%s certificate: %+v %v", what, who, err)
		}
	}
	setFingerprints(renewal.Fingerprint, "")
	_, err = s.Authenticate(ctx, old, time.Now(), "test")
	wantCode(t, err, "certificate_not_recorded")
	if _, err := s.Authenticate(ctx, renewed, time.Now(), "test"); err != nil {
		t.Fatalf("renewed certificate: %v", err)
	}
}
