package security

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pkiT0 is the fixed "now" of the PKI tests, so validity arithmetic is exact.
var pkiT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTestCA(t *testing.T, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA("test-cluster", now)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func TestCARoundTrip(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	c := ca.Certificate()
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: IsCA=%v valid=%v MaxPathLen=%d zero=%v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("KeyUsage = %v", c.KeyUsage)
	}
	if len(c.SubjectKeyId) == 0 {
		t.Error("no SubjectKeyId")
	}
	if n := c.SerialNumber.BitLen(); n == 0 || n > 128 {
		t.Errorf("serial has %d bits", n)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T is not ECDSA P-256", c.PublicKey)
	}
	if !c.NotAfter.Equal(pkiT0.Add(CAValidity)) || c.NotBefore.After(pkiT0) {
		t.Errorf("validity %v..%v, want ..%v", c.NotBefore, c.NotAfter, pkiT0.Add(CAValidity))
	}

	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
		t.Fatalf("KeyPEM is not a PKCS#8 PRIVATE KEY block")
	}
	loaded, err := LoadCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.Fingerprint() != ca.Fingerprint() {
		t.Error("fingerprint changed across the PEM round trip")
	}
	// The loaded key must really sign: a leaf from it verifies under the
	// original CA's pool.
	sc, err := loaded.IssueServerCert([]string{"api.test"}, pkiT0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "api.test", CurrentTime: pkiT0}); err != nil {
		t.Errorf("leaf from loaded CA does not verify: %v", err)
	}
}

func TestNewCARejectsBadClusterName(t *testing.T) {
	for _, name := range []string{"", strings.Repeat("x", 65), "a\nb"} {
		if _, err := NewCA(name, pkiT0); !errors.Is(err, ErrBadCertRequest) {
			t.Errorf("NewCA(%q) = %v, want ErrBadCertRequest", name, err)
		}
	}
}

func TestLoadCARejects(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	other := newTestCA(t, pkiT0)
	otherKey, _ := other.KeyPEM()
	caKey, _ := ca.KeyPEM()

	leaf, err := ca.IssueServerCert([]string{"api.test"}, pkiT0, 0)
	if err != nil {
		t.Fatal(err)
	}
	leafCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]})
	leafKey, _ := marshalKeyPEM(leaf.PrivateKey)

	// A CA certificate signed by another CA (an intermediate) is not a root.
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interDER, err := other.sign(&x509.Certificate{IsCA: true}, interKey.Public(), pkiT0, 0, CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	interCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})
	interKeyPEM, _ := marshalKeyPEM(interKey)

	sec1, _ := x509.MarshalECPrivateKey(interKey)
	sec1PEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})

	for _, tc := range []struct {
		name          string
		certPEM, keyP []byte
	}{
		{"mismatched key", ca.CertPEM(), otherKey},
		{"non-CA cert", leafCert, leafKey},
		{"not self-signed", interCert, interKeyPEM},
		{"garbage cert", []byte("not pem"), caKey},
		{"garbage key", ca.CertPEM(), []byte("not pem")},
		{"key in cert slot", caKey, caKey},
		{"SEC1 key block", ca.CertPEM(), sec1PEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := LoadCA(tc.certPEM, tc.keyP); !errors.Is(err, ErrInvalidCA) {
				t.Fatalf("LoadCA = %v, want ErrInvalidCA", err)
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	sum := sha256.Sum256(ca.Certificate().Raw)
	want := hex.EncodeToString(sum[:])
	if got := ca.Fingerprint(); got != want {
		t.Fatalf("Fingerprint = %s, want %s", got, want)
	}
	if Fingerprint(ca.Certificate()) != ca.Fingerprint() || Fingerprint(nil) != "" {
		t.Error("Fingerprint and (*CA).Fingerprint disagree, or nil is not empty")
	}
	// It is exactly what a join token pins.
	tok, _, _, err := NewJoinToken(ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	jt, err := ParseJoinToken(tok)
	if err != nil || jt.CAFingerprint != want {
		t.Fatalf("join token pins %q, %v; want %s", jt.CAFingerprint, err, want)
	}
}

func TestParseFingerprint(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	colons := strings.TrimSuffix(strings.Repeat("AB:", 32), ":")
	for _, tc := range []struct {
		in, want string
	}{
		{hex64, hex64},
		{strings.ToUpper(hex64), hex64},
		{colons, hex64},
		{strings.ToLower(colons), hex64},
		{"  " + hex64 + "\n", hex64},
		{"", ""},
		{hex64[:62], ""},
		{hex64 + "ab", ""},
		{strings.Replace(hex64, "a", "g", 1), ""},
		{"abab:" + hex64[4:], ""},                          // a colon, but not pairs
		{strings.Replace(colons, "AB:AB", "ABA:B", 1), ""}, // pairs misaligned
		{strings.TrimSuffix(strings.Repeat("AB:", 33), ":"), ""}, // 33 bytes
	} {
		got, err := ParseFingerprint(tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrBadFingerprint) {
				t.Errorf("ParseFingerprint(%q) = %q, %v; want ErrBadFingerprint", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseFingerprint(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestIssueServerCert(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	sc, err := ca.IssueServerCert([]string{"API.Example.test.", "10.0.0.1", "::1", "*.nodes.example.test"}, pkiT0, 0)
	if err != nil {
		t.Fatalf("IssueServerCert: %v", err)
	}
	if len(sc.Leaf.DNSNames) != 2 || len(sc.Leaf.IPAddresses) != 2 {
		t.Fatalf("SANs: dns %v ip %v", sc.Leaf.DNSNames, sc.Leaf.IPAddresses)
	}
	if !sc.Leaf.NotAfter.Equal(pkiT0.Add(ServerCertValidity)) {
		t.Errorf("NotAfter = %v, want default one year", sc.Leaf.NotAfter)
	}
	if sc.Leaf.IsCA {
		t.Error("server cert is a CA")
	}
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"api.example.test", true},
		{"10.0.0.1", true},
		{"::1", true},
		{"n1.nodes.example.test", true},
		{"other.example.test", false},
		{"example.test", false},
		{"10.0.0.2", false},
		{"127.0.0.1", false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			_, err := sc.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: tc.host, CurrentTime: pkiT0.Add(time.Hour),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			if (err == nil) != tc.ok {
				t.Fatalf("Verify(%s) = %v, want ok=%v", tc.host, err, tc.ok)
			}
		})
	}
	// A server certificate is not a client identity.
	if _, err := sc.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: pkiT0,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("server cert verifies for client auth")
	}
	// Another CA's pool does not trust it.
	if _, err := sc.Leaf.Verify(x509.VerifyOptions{Roots: newTestCA(t, pkiT0).Pool(), DNSName: "api.example.test", CurrentTime: pkiT0}); err == nil {
		t.Error("server cert verifies under another CA")
	}
}

func TestIssueServerCertRejects(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	for _, tc := range []struct {
		name     string
		sans     []string
		validity time.Duration
	}{
		{"no sans", nil, 0},
		{"underscore", []string{"bad_name.test"}, 0},
		{"leading hyphen", []string{"-a.test"}, 0},
		{"empty label", []string{"a..test"}, 0},
		{"ip zone", []string{"fe80::1%eth0"}, 0},
		{"url", []string{"https://api.test"}, 0},
		{"negative validity", []string{"api.test"}, -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ca.IssueServerCert(tc.sans, pkiT0, tc.validity); !errors.Is(err, ErrBadCertRequest) {
				t.Fatalf("IssueServerCert = %v, want ErrBadCertRequest", err)
			}
		})
	}
}

func TestIssueClientCert(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	cc, err := ca.IssueClientCert(ControlPlaneCN, pkiT0, 0)
	if err != nil {
		t.Fatalf("IssueClientCert: %v", err)
	}
	if cc.Leaf.Subject.CommonName != ControlPlaneCN || !cc.Leaf.NotAfter.Equal(pkiT0.Add(ClientCertValidity)) {
		t.Errorf("cn %q notAfter %v", cc.Leaf.Subject.CommonName, cc.Leaf.NotAfter)
	}
	if err := VerifyControlPlaneCert(ca, cc.Leaf, pkiT0); err != nil {
		t.Errorf("VerifyControlPlaneCert: %v", err)
	}
	if err := VerifyControlPlaneCert(newTestCA(t, pkiT0), cc.Leaf, pkiT0); !errors.Is(err, ErrUntrustedCert) {
		t.Errorf("VerifyControlPlaneCert under another CA = %v, want ErrUntrustedCert", err)
	}
	// A client certificate must never carry a node identity.
	if _, err := ca.IssueClientCert("node-worker-1", pkiT0, 0); !errors.Is(err, ErrBadCertRequest) {
		t.Errorf("IssueClientCert(node-…) = %v, want ErrBadCertRequest", err)
	}
	if _, err := ca.IssueClientCert("", pkiT0, 0); !errors.Is(err, ErrBadCertRequest) {
		t.Errorf("IssueClientCert(\"\") = %v, want ErrBadCertRequest", err)
	}
	// Other client identities under the same CA do not pass as the control
	// plane.
	other, err := ca.IssueClientCert("otherix-raft-peer", pkiT0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyControlPlaneCert(ca, other.Leaf, pkiT0); !errors.Is(err, ErrUntrustedCert) {
		t.Errorf("VerifyControlPlaneCert(other cn) = %v, want ErrUntrustedCert", err)
	}
}

func TestLeafValidityCappedByCA(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	caEnd := ca.Certificate().NotAfter
	late := caEnd.Add(-30 * 24 * time.Hour)
	sc, err := ca.IssueServerCert([]string{"api.test"}, late, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !sc.Leaf.NotAfter.Equal(caEnd) {
		t.Errorf("NotAfter = %v, want capped at CA expiry %v", sc.Leaf.NotAfter, caEnd)
	}
	for _, now := range []time.Time{caEnd, caEnd.Add(time.Hour), pkiT0.Add(-time.Hour)} {
		if _, err := ca.IssueServerCert([]string{"api.test"}, now, 0); !errors.Is(err, ErrCANotValid) {
			t.Errorf("IssueServerCert at %v = %v, want ErrCANotValid", now, err)
		}
	}
}

func TestWriteKeyFile(t *testing.T) {
	dir := t.TempDir()
	data := []byte("-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")

	t.Run("new file is 0600", func(t *testing.T) {
		p := filepath.Join(dir, "ca.key")
		if err := WriteKeyFile(p, data); err != nil {
			t.Fatal(err)
		}
		checkKeyFile(t, p, data)
	})
	t.Run("replaces a world-readable file with 0600", func(t *testing.T) {
		p := filepath.Join(dir, "old.key")
		if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := WriteKeyFile(p, data); err != nil {
			t.Fatal(err)
		}
		checkKeyFile(t, p, data)
	})
	t.Run("symlink refused", func(t *testing.T) {
		target := filepath.Join(dir, "target")
		if err := os.WriteFile(target, []byte("untouched"), 0o644); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, "link.key")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if err := WriteKeyFile(link, data); !errors.Is(err, ErrUnsafeKeyPath) {
			t.Fatalf("WriteKeyFile(symlink) = %v, want ErrUnsafeKeyPath", err)
		}
		if b, _ := os.ReadFile(target); string(b) != "untouched" {
			t.Errorf("symlink target was written: %q", b)
		}
	})
	t.Run("missing dir fails", func(t *testing.T) {
		if err := WriteKeyFile(filepath.Join(dir, "nope", "k"), data); err == nil {
			t.Fatal("WriteKeyFile into a missing directory succeeded")
		}
	})
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func checkKeyFile(t *testing.T, path string, want []byte) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, want regular 0600", path, fi.Mode())
	}
	if b, _ := os.ReadFile(path); string(b) != string(want) {
		t.Errorf("%s content = %q", path, b)
	}
}

// TestMutualTLS runs real handshakes over an in-memory pipe: the API's
// server certificate with a node's enrolled client certificate, and a node
// certificate from another CA that the API must refuse.
func TestMutualTLS(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now)
	server, err := ca.IssueServerCert([]string{"api.test"}, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	enroll := func(ca *CA) tls.Certificate {
		keyPEM, csr, err := NewNodeKeyAndCSR("worker-1")
		if err != nil {
			t.Fatal(err)
		}
		certPEM, _, err := ca.SignNodeCSR(csr, "worker-1", now, 0)
		if err != nil {
			t.Fatal(err)
		}
		kp, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	handshake := func(client tls.Certificate) (peer *x509.Certificate, err error) {
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		srv := tls.Server(s, &tls.Config{Certificates: []tls.Certificate{server}, ClientCAs: ca.Pool(),
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
		cli := tls.Client(c, &tls.Config{Certificates: []tls.Certificate{client}, RootCAs: ca.Pool(),
			ServerName: "api.test", MinVersion: tls.VersionTLS13})
		done := make(chan error, 1)
		go func() {
			err := cli.Handshake()
			if err == nil {
				// Read until the server's verdict on our certificate
				// arrives (TLS 1.3 clients finish before the server
				// checks them).
				_, err = cli.Read(make([]byte, 1))
			}
			done <- err
		}()
		serr := srv.Handshake()
		if serr == nil {
			peer = srv.ConnectionState().PeerCertificates[0]
			_, _ = srv.Write([]byte{1})
		} else {
			s.Close()
		}
		<-done
		return peer, serr
	}

	peer, err := handshake(enroll(ca))
	if err != nil {
		t.Fatalf("handshake with enrolled node: %v", err)
	}
	if name, err := NodeNameFromCert(peer); err != nil || name != "worker-1" {
		t.Errorf("NodeNameFromCert = %q, %v", name, err)
	}
	if _, err := handshake(enroll(newTestCA(t, now))); err == nil {
		t.Error("handshake with a node of another CA succeeded")
	}
}
