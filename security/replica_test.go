package security

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"slices"
	"testing"
)

func TestSignReplicaCSR(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	keyPEM, csr, err := NewReplicaKeyAndCSR("r2", []string{"127.0.0.1", "api-2.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if len(keyPEM) == 0 {
		t.Fatal("no key")
	}
	certPEM, fp, err := ca.SignReplicaCSR(csr, "r2", pkiT0, 0)
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCertPEM(t, certPEM)
	if Fingerprint(cert) != fp {
		t.Error("fingerprint does not match the certificate")
	}
	if cert.Subject.CommonName != "otherix-replica-r2" {
		t.Errorf("cn = %q", cert.Subject.CommonName)
	}
	if !slices.Contains(cert.DNSNames, ReplicaPeerSAN) || !slices.Contains(cert.DNSNames, "api-2.example.com") {
		t.Errorf("dns SANs = %v", cert.DNSNames)
	}
	if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("ip SANs = %v", cert.IPAddresses)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Errorf("ext key usage = %v", cert.ExtKeyUsage)
	}
	if name, err := ReplicaNameFromCert(cert); err != nil || name != "r2" {
		t.Errorf("ReplicaNameFromCert = %q, %v", name, err)
	}
}

func TestSignReplicaCSRPolicy(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		name   string
		cn     string
		mod    func(*x509.CertificateRequest)
		reason string
	}{
		{"node cn", NodeCN("r2"), func(r *x509.CertificateRequest) { r.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)} }, ReasonCNMismatch},
		{"other replica", ReplicaCN("r3"), func(r *x509.CertificateRequest) { r.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)} }, ReasonCNMismatch},
		{"asks for the marker", ReplicaCN("r2"), func(r *x509.CertificateRequest) { r.DNSNames = []string{ReplicaPeerSAN} }, ReasonUnexpectedSAN},
		{"wildcard", ReplicaCN("r2"), func(r *x509.CertificateRequest) { r.DNSNames = []string{"*.otherix.invalid"} }, ReasonUnexpectedSAN},
		{"uri", ReplicaCN("r2"), func(r *x509.CertificateRequest) {
			r.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
			r.URIs = []*url.URL{{Scheme: "spiffe", Host: "x"}}
		}, ReasonUnexpectedSAN},
		{"no SAN", ReplicaCN("r2"), nil, ReasonUnexpectedSAN},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ca.SignReplicaCSR(makeCSR(t, key, tc.cn, tc.mod), "r2", pkiT0, 0)
			if !errors.Is(err, &PolicyError{Reason: tc.reason}) {
				t.Fatalf("err = %v, want %s", err, tc.reason)
			}
		})
	}
}

// TestReplicaMarkerReserved: the marker SAN is what the etcd peer listener
// checks, so no other issuance path may write it or a wildcard covering it.
func TestReplicaMarkerReserved(t *testing.T) {
	ca := newTestCA(t, pkiT0)
	for _, san := range []string{ReplicaPeerSAN, "*.otherix.invalid"} {
		if _, err := ca.IssueServerCert([]string{san}, pkiT0, 0); !errors.Is(err, ErrBadCertRequest) {
			t.Errorf("IssueServerCert(%s) = %v, want ErrBadCertRequest", san, err)
		}
	}
	if _, err := ca.IssueClientCert(ReplicaCN("r1"), pkiT0, 0); !errors.Is(err, ErrBadCertRequest) {
		t.Errorf("IssueClientCert(replica cn) = %v, want ErrBadCertRequest", err)
	}
	node, err := ca.IssueClientCert(ControlPlaneCN, pkiT0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReplicaNameFromCert(node.Leaf); !errors.Is(err, &PolicyError{Reason: ReasonNotReplicaCert}) {
		t.Errorf("ReplicaNameFromCert(control plane) = %v", err)
	}
}
