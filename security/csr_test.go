package security

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

// makeCSR builds a CSR signed by key with the given CN and SANs set by mod.
func makeCSR(t *testing.T, key crypto.Signer, cn string, mod func(*x509.CertificateRequest)) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func parseCertPEM(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("not a CERTIFICATE PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignNodeCSR(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	keyPEM, csr, err := NewNodeKeyAndCSR("worker-1")
	if err != nil {
		t.Fatalf("NewNodeKeyAndCSR: %v", err)
	}
	certPEM, fp, err := ca.SignNodeCSR(csr, "worker-1", pkiT0, 0)
	if err != nil {
		t.Fatalf("SignNodeCSR: %v", err)
	}
	cert := parseCertPEM(t, certPEM)
	if cert.Subject.CommonName != "node-worker-1" || !slices.Equal(cert.DNSNames, []string{"worker-1"}) {
		t.Errorf("cn %q dns %v", cert.Subject.CommonName, cert.DNSNames)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("ExtKeyUsage = %v, want client and server auth", cert.ExtKeyUsage)
	}
	if cert.IsCA || !cert.NotAfter.Equal(pkiT0.Add(NodeCertValidity)) {
		t.Errorf("IsCA %v NotAfter %v, want 90 days", cert.IsCA, cert.NotAfter)
	}
	if fp != Fingerprint(cert) {
		t.Errorf("fingerprint %s, want %s", fp, Fingerprint(cert))
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Errorf("certificate does not match the node key: %v", err)
	}
	if err := VerifyNodeCert(ca, cert, pkiT0.Add(time.Hour)); err != nil {
		t.Errorf("VerifyNodeCert: %v", err)
	}
	// The agent also serves its API with this certificate, dialled by name.
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "worker-1", CurrentTime: pkiT0,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("node cert does not verify as a server: %v", err)
	}
	if name, err := NodeNameFromCert(cert); err != nil || name != "worker-1" {
		t.Errorf("NodeNameFromCert = %q, %v", name, err)
	}
}

func TestSignNodeCSRAccepts(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		csr  []byte
	}{
		{"no SAN", makeCSR(t, p256, "node-n1", nil)},
		{"ed25519", makeCSR(t, ed, "node-n1", func(r *x509.CertificateRequest) { r.DNSNames = []string{"n1"} })},
		// Requested extras are ignored, not copied: the issued cert is
		// built from the policy alone.
		{"extra subject fields", makeCSR(t, p256, "node-n1", func(r *x509.CertificateRequest) {
			r.Subject.Organization = []string{"system:masters"}
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, _, err := ca.SignNodeCSR(tc.csr, "n1", pkiT0, 0)
			if err != nil {
				t.Fatalf("SignNodeCSR: %v", err)
			}
			c := parseCertPEM(t, certPEM)
			if len(c.Subject.Organization) != 0 || !slices.Equal(c.DNSNames, []string{"n1"}) {
				t.Errorf("subject %v dns %v", c.Subject, c.DNSNames)
			}
		})
	}
}

func TestSignNodeCSRPolicy(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatalf("rsa 1024: %v", err)
	}
	good := makeCSR(t, p256, "node-worker-1", nil)

	// Flip a byte in the signature, and separately in the signed CN, keeping
	// the DER well-formed: both must fail the signature check.
	badSig := bytes.Clone(good)
	badSig[len(badSig)-1] ^= 0x01
	badCN := bytes.Replace(good, []byte("node-worker-1"), []byte("node-worker-2"), 1)

	for _, tc := range []struct {
		name   string
		csr    []byte
		want   string // node name the token allows
		reason string
	}{
		{"other CN", makeCSR(t, p256, "node-worker-2", nil), "worker-1", ReasonCNMismatch},
		{"CN without prefix", makeCSR(t, p256, "worker-1", nil), "worker-1", ReasonCNMismatch},
		{"CN other case", makeCSR(t, p256, "node-Worker-1", nil), "worker-1", ReasonCNMismatch},
		{"tampered signature", badSig, "worker-1", ReasonBadSignature},
		{"tampered CN", badCN, "worker-2", ReasonBadSignature},
		{"garbage", []byte("not a csr"), "worker-1", ReasonMalformedCSR},
		{"rsa 1024", makeCSR(t, rsa1024, "node-worker-1", nil), "worker-1", ReasonWeakKey},
		{"ecdsa P-384", makeCSR(t, p384, "node-worker-1", nil), "worker-1", ReasonWeakKey},
		{"extra DNS SAN", makeCSR(t, p256, "node-worker-1", func(r *x509.CertificateRequest) {
			r.DNSNames = []string{"worker-1", "api.example.test"}
		}), "worker-1", ReasonUnexpectedSAN},
		{"other DNS SAN", makeCSR(t, p256, "node-worker-1", func(r *x509.CertificateRequest) {
			r.DNSNames = []string{"worker-2"}
		}), "worker-1", ReasonUnexpectedSAN},
		{"IP SAN", makeCSR(t, p256, "node-worker-1", func(r *x509.CertificateRequest) {
			r.IPAddresses = []net.IP{net.ParseIP("10.0.0.1")}
		}), "worker-1", ReasonUnexpectedSAN},
		{"email SAN", makeCSR(t, p256, "node-worker-1", func(r *x509.CertificateRequest) {
			r.EmailAddresses = []string{"root@example.test"}
		}), "worker-1", ReasonUnexpectedSAN},
		{"invalid wanted name", good, "Worker_1", ReasonInvalidNodeName},
		{"empty wanted name", good, "", ReasonInvalidNodeName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, _, err := ca.SignNodeCSR(tc.csr, tc.want, pkiT0, 0)
			var pe *PolicyError
			if !errors.As(err, &pe) || pe.Reason != tc.reason {
				t.Fatalf("SignNodeCSR = %v, want PolicyError %s", err, tc.reason)
			}
			if !errors.Is(err, &PolicyError{Reason: tc.reason}) || errors.Is(err, &PolicyError{Reason: "other"}) {
				t.Error("errors.Is does not match by reason")
			}
			if certPEM != nil {
				t.Error("certificate returned with an error")
			}
		})
	}
}

func TestNewNodeKeyAndCSRRejectsBadName(t *testing.T) {
	for _, name := range []string{"", "-a", "a_b", "A", "a.b"} {
		if _, _, err := NewNodeKeyAndCSR(name); !errors.Is(err, &PolicyError{Reason: ReasonInvalidNodeName}) {
			t.Errorf("NewNodeKeyAndCSR(%q) = %v, want invalid_node_name", name, err)
		}
	}
}

func TestNodeCertValidityCappedByCA(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	_, csr, err := NewNodeKeyAndCSR("n1")
	if err != nil {
		t.Fatal(err)
	}
	caEnd := ca.Certificate().NotAfter
	for _, tc := range []struct {
		name     string
		now      time.Time
		validity time.Duration
		want     time.Time
	}{
		{"default", pkiT0, 0, pkiT0.Add(NodeCertValidity)},
		{"explicit", pkiT0, time.Hour, pkiT0.Add(time.Hour)},
		{"default past CA expiry", caEnd.Add(-10 * 24 * time.Hour), 0, caEnd},
		{"long validity", pkiT0, 20 * 365 * 24 * time.Hour, caEnd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, _, err := ca.SignNodeCSR(csr, "n1", tc.now, tc.validity)
			if err != nil {
				t.Fatal(err)
			}
			if got := parseCertPEM(t, certPEM).NotAfter; !got.Equal(tc.want) {
				t.Errorf("NotAfter = %v, want %v", got, tc.want)
			}
		})
	}
	if _, _, err := ca.SignNodeCSR(csr, "n1", caEnd.Add(time.Second), 0); !errors.Is(err, ErrCANotValid) {
		t.Errorf("SignNodeCSR after CA expiry = %v, want ErrCANotValid", err)
	}
}

func TestVerifyNodeCert(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	other := newTestCA(t, pkiT0)
	sign := func(ca *CA, name string) *x509.Certificate {
		_, csr, err := NewNodeKeyAndCSR(name)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, _, err := ca.SignNodeCSR(csr, name, pkiT0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return parseCertPEM(t, certPEM)
	}
	node := sign(ca, "n1")
	cp, err := ca.IssueClientCert(ControlPlaneCN, pkiT0, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueServerCert([]string{"n1"}, pkiT0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		now  time.Time
		want error
	}{
		{"valid", node, pkiT0.Add(time.Hour), nil},
		{"another CA", sign(other, "n1"), pkiT0.Add(time.Hour), ErrUntrustedCert},
		{"expired", node, pkiT0.Add(NodeCertValidity + time.Second), ErrUntrustedCert},
		{"server-only cert", srv.Leaf, pkiT0.Add(time.Hour), ErrUntrustedCert},
		{"control plane cert", cp.Leaf, pkiT0.Add(time.Hour), &PolicyError{Reason: ReasonNotNodeCert}},
		{"nil", nil, pkiT0, &PolicyError{Reason: ReasonNotNodeCert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyNodeCert(ca, tc.cert, tc.now)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("VerifyNodeCert = %v, want %v", err, tc.want)
			}
		})
	}
	// A node certificate is a client identity but never the control plane's.
	if err := VerifyControlPlaneCert(ca, node, pkiT0); !errors.Is(err, ErrUntrustedCert) {
		t.Errorf("VerifyControlPlaneCert(node cert) = %v, want ErrUntrustedCert", err)
	}
}

func TestNodeNameFromCert(t *testing.T) {
	for _, tc := range []struct {
		cn, want string
	}{
		{"node-a", "a"},
		{"node-worker-1", "worker-1"},
		{"node-", ""},
		{"node-A", ""},
		{"node-a.b", ""},
		{"nodea", ""},
		{"otherix-control-plane", ""},
	} {
		got, err := NodeNameFromCert(&x509.Certificate{Subject: pkix.Name{CommonName: tc.cn}})
		if tc.want == "" {
			if !errors.Is(err, &PolicyError{Reason: ReasonNotNodeCert}) {
				t.Errorf("NodeNameFromCert(%q) = %q, %v; want not_node_cert", tc.cn, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NodeNameFromCert(%q) = %q, %v; want %q", tc.cn, got, err, tc.want)
		}
	}
}
