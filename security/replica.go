package security

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Replica peer identity. Raft peer traffic between otherix-api replicas is
// mutual TLS under the cluster CA; a peer certificate has CN
// otherix-replica-<name>, the addresses peers dial as SANs, and the marker
// SAN ReplicaPeerSAN.
const (
	// ReplicaCNPrefix starts every replica peer certificate's CN.
	ReplicaCNPrefix = "otherix-replica-"

	// ReplicaPeerSAN is a DNS SAN only replica peer certificates carry.
	// etcd's peer listener can check a client certificate's CN only for
	// exact values, which cannot follow replicas joining; it can check that
	// a SAN matches a fixed host name (TLSInfo.AllowedHostnames), so the
	// policy "only otherix-replica-* certificates" becomes "only
	// certificates with this SAN", and only SignReplicaCSR ever writes it:
	// node SANs are single DNS labels, and IssueServerCert and
	// IssueClientCert refuse it. The .invalid top-level domain never
	// resolves (RFC 6761), so no host can ever be reached by it.
	ReplicaPeerSAN = "replica-peer.otherix.invalid"

	// ReplicaCertValidity is a peer certificate's default lifetime. A
	// replica re-issues its own at every start once it holds the CA, and
	// renews it while running when a third of its validity is left.
	ReplicaCertValidity = 365 * 24 * time.Hour

	// ReasonNotReplicaCert refuses a certificate whose CN is not
	// otherix-replica-<valid name>.
	ReasonNotReplicaCert = "not_replica_cert"
)

// ReplicaCN returns the peer certificate CN of a replica.
func ReplicaCN(name string) string { return ReplicaCNPrefix + name }

// checkReplicaName applies the resource-name rule (a DNS label) to a
// replica name, which is also its etcd member name.
func checkReplicaName(name string) error {
	if checkNodeName(name) != nil {
		return policyErr(ReasonInvalidNodeName, "replica name %q is not a DNS label", name)
	}
	return nil
}

// parseReplicaSANs splits the addresses peers dial (host names or IPs,
// without ports) into DNS names and IPs. The marker SAN and wildcards are
// refused: the marker is added by the signer only, and a wildcard would let
// one certificate answer for hosts it does not run on.
func parseReplicaSANs(sans []string) (dns []string, ips []net.IP, err error) {
	if len(sans) == 0 {
		return nil, nil, policyErr(ReasonUnexpectedSAN, "a replica peer certificate needs the addresses its peers dial")
	}
	for _, s := range sans {
		if addr, perr := netip.ParseAddr(s); perr == nil {
			if addr.Zone() != "" {
				return nil, nil, policyErr(ReasonUnexpectedSAN, "ip SAN %q has a zone", s)
			}
			ips = append(ips, net.IP(addr.Unmap().AsSlice()))
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(s, "."))
		if !isDNSName(name) || strings.HasPrefix(name, "*.") || name == ReplicaPeerSAN {
			return nil, nil, policyErr(ReasonUnexpectedSAN, "SAN %q is not an IP address or a plain DNS name", s)
		}
		dns = append(dns, name)
	}
	return dns, ips, nil
}

// NewReplicaKeyAndCSR generates a replica's ECDSA P-256 peer key and a CSR
// for CN otherix-replica-<name> with sans (the hosts of --peer-listen and
// --advertise). It runs on the joining replica: the key stays there.
func NewReplicaKeyAndCSR(name string, sans []string) (keyPEM, csrDER []byte, err error) {
	if err := checkReplicaName(name); err != nil {
		return nil, nil, err
	}
	dns, ips, err := parseReplicaSANs(sans)
	if err != nil {
		return nil, nil, err
	}
	return newKeyAndCSR("replica", &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: ReplicaCN(name)},
		DNSNames:    dns,
		IPAddresses: ips,
	})
}

// ReplicaCSRForKey makes a replica peer CSR signed by an existing key
// (keyPEM, PKCS#8): a renewal keeps the key, so the certificate file alone
// changes and a handshake never meets a certificate and key that do not
// match.
func ReplicaCSRForKey(keyPEM []byte, name string, sans []string) ([]byte, error) {
	if err := checkReplicaName(name); err != nil {
		return nil, err
	}
	dns, ips, err := parseReplicaSANs(sans)
	if err != nil {
		return nil, err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("replica key: no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("replica key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("replica key: %T cannot sign", key)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: ReplicaCN(name)}, DNSNames: dns, IPAddresses: ips}, signer)
	if err != nil {
		return nil, fmt.Errorf("create replica csr: %w", err)
	}
	return csr, nil
}

// SignReplicaCSR signs a replica's peer CSR: the signature verifies, the CN
// is exactly otherix-replica-<wantName> (the name the replica join token
// allows), the SANs are plain DNS names or IPs (no e-mail, URI, wildcard or
// marker), the key is ECDSA P-256 or Ed25519. The certificate is built from
// the policy: that CN, the CSR's DNS and IP SANs plus ReplicaPeerSAN, client
// and server auth (a peer both dials and serves Raft). validity 0 means
// ReplicaCertValidity. Refusals are *PolicyError.
func (ca *CA) SignReplicaCSR(csrDER []byte, wantName string, now time.Time, validity time.Duration) (certPEM []byte, fingerprint string, err error) {
	if err := checkReplicaName(wantName); err != nil {
		return nil, "", err
	}
	csr, err := parseCSR(csrDER, ReplicaCN(wantName))
	if err != nil {
		return nil, "", err
	}
	if len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, "", policyErr(ReasonUnexpectedSAN, "only DNS names and IP addresses are allowed")
	}
	sans := append([]string(nil), csr.DNSNames...)
	for _, ip := range csr.IPAddresses {
		sans = append(sans, ip.String())
	}
	dns, ips, err := parseReplicaSANs(sans)
	if err != nil {
		return nil, "", err
	}
	if err := checkNodeKey(csr.PublicKey); err != nil {
		return nil, "", err
	}
	return ca.signPEM("replica", &x509.Certificate{
		Subject:     pkix.Name{CommonName: ReplicaCN(wantName)},
		DNSNames:    append(dns, ReplicaPeerSAN),
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}, csr.PublicKey, now, validity, ReplicaCertValidity)
}

// IssueReplicaPeerCert generates a key and signs a peer certificate for a
// replica that holds the CA key itself: the first replica of a cluster, or
// one growing from a single-node install. It returns PEM for
// WriteKeyFile and the certificate file.
func (ca *CA) IssueReplicaPeerCert(name string, sans []string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	keyPEM, csrDER, err := NewReplicaKeyAndCSR(name, sans)
	if err != nil {
		return nil, nil, err
	}
	certPEM, _, err = ca.SignReplicaCSR(csrDER, name, now, validity)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// ReplicaNameFromCert returns the replica name from a certificate's CN,
// which must be otherix-replica-<DNS label>, and checks that it carries
// ReplicaPeerSAN. It does not verify the chain.
func ReplicaNameFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", policyErr(ReasonNotReplicaCert, "no certificate")
	}
	name, ok := strings.CutPrefix(cert.Subject.CommonName, ReplicaCNPrefix)
	if !ok || checkReplicaName(name) != nil {
		return "", policyErr(ReasonNotReplicaCert, "cn %q is not %s<name>", cert.Subject.CommonName, ReplicaCNPrefix)
	}
	for _, d := range cert.DNSNames {
		if d == ReplicaPeerSAN {
			return name, nil
		}
	}
	return "", policyErr(ReasonNotReplicaCert, "cn %q lacks the replica peer SAN", cert.Subject.CommonName)
}
