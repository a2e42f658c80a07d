package security

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/otherix/otherix/messages"
)

// Reasons a node CSR or certificate is refused. They are stable: the API logs
// them with the node name and may return them to the agent, so never rename
// one.
const (
	ReasonMalformedCSR    = "malformed_csr"     // not a parseable PKCS#10 request
	ReasonBadSignature    = "bad_signature"     // the CSR is not signed by its own key
	ReasonCNMismatch      = "cn_mismatch"       // CN is not node-<the name the token allows>
	ReasonUnexpectedSAN   = "unexpected_san"    // any SAN but the node name as a DNS name
	ReasonWeakKey         = "weak_key"          // key is not ECDSA P-256 or Ed25519
	ReasonInvalidNodeName = "invalid_node_name" // node name is not a DNS label
	ReasonNotNodeCert     = "not_node_cert"     // a certificate's CN is not node-<valid name>
)

// PolicyError is a refusal by the node-certificate policy. Reason is one of
// the Reason constants; Detail is a short explanation for logs (names and
// types, never key material). errors.Is matches another *PolicyError by
// Reason, so callers can write errors.Is(err, &PolicyError{Reason: ReasonCNMismatch}).
type PolicyError struct {
	Reason string
	Detail string
}

func (e *PolicyError) Error() string {
	if e.Detail != "" {
		return "security: node certificate policy: " + e.Reason + ": " + e.Detail
	}
	return "security: node certificate policy: " + e.Reason
}

// Is matches a *PolicyError with the same Reason.
func (e *PolicyError) Is(target error) bool {
	var t *PolicyError
	return errors.As(target, &t) && t.Reason == e.Reason
}

func policyErr(reason, format string, args ...any) *PolicyError {
	return &PolicyError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// NodeCN returns the certificate CN of a node: node-<name>.
func NodeCN(nodeName string) string { return NodeCNPrefix + nodeName }

// checkNodeName applies the resource-name rule (a DNS label) to a node name:
// the name becomes the certificate's DNS SAN and a hostname, and anything
// looser would let one name spoof another.
func checkNodeName(name string) error {
	if err := messages.ValidateName("node name", name); err != nil {
		return policyErr(ReasonInvalidNodeName, "%q is not a DNS label", name)
	}
	return nil
}

// NewNodeKeyAndCSR generates a node's ECDSA P-256 key and a CSR for CN
// node-<nodeName> with the node name as its only DNS SAN. It runs on the
// agent: the key stays there (keyPEM is PKCS#8, for WriteKeyFile) and only
// csrDER travels with the join token.
func NewNodeKeyAndCSR(nodeName string) (keyPEM []byte, csrDER []byte, err error) {
	if err := checkNodeName(nodeName); err != nil {
		return nil, nil, err
	}
	return newKeyAndCSR("node", &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: NodeCN(nodeName)},
		DNSNames: []string{nodeName},
	})
}

// newKeyAndCSR generates an ECDSA P-256 key and a CSR of req signed by it;
// what names the kind of certificate in errors.
func newKeyAndCSR(what string, req *x509.CertificateRequest) (keyPEM, csrDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s key: %w", what, err)
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, req, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create %s csr: %w", what, err)
	}
	keyPEM, err = marshalKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return keyPEM, csrDER, nil
}

// parseCSR parses a CSR whose signature must verify and whose CN must be
// exactly wantCN (the name the join token allows). Refusals are *PolicyError.
func parseCSR(csrDER []byte, wantCN string) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, policyErr(ReasonMalformedCSR, "parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, policyErr(ReasonBadSignature, "%v", err)
	}
	if csr.Subject.CommonName != wantCN {
		return nil, policyErr(ReasonCNMismatch, "csr cn %q, token allows %q", csr.Subject.CommonName, wantCN)
	}
	return csr, nil
}

// signPEM signs tmpl for pub (see sign) and returns the certificate as PEM
// with its fingerprint; what names the kind of certificate in errors.
func (ca *CA) signPEM(what string, tmpl *x509.Certificate, pub any, now time.Time, validity, def time.Duration) (certPEM []byte, fingerprint string, err error) {
	der, err := ca.sign(tmpl, pub, now, validity, def)
	if err != nil {
		return nil, "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", fmt.Errorf("parse %s certificate: %w", what, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Fingerprint(cert), nil
}

// SignNodeCSR signs a node's CSR after checking it against a strict policy:
// the signature verifies, the CN is exactly node-<wantNodeName> (the name the
// join token allows), the only SAN allowed is a DNS name equal to the node
// name, and the key is ECDSA P-256 or Ed25519. Refusals are *PolicyError.
//
// Nothing else is taken from the CSR: subject attributes and requested
// extensions are ignored, and the certificate is built from the policy alone
// (CN node-<name>, DNS SAN <name>, client and server auth, since the agent
// both calls the API and serves its own mTLS API). validity 0 means
// NodeCertValidity; the result never outlives the CA. It returns the
// certificate as PEM and its fingerprint, which the API records for the node.
func (ca *CA) SignNodeCSR(csrDER []byte, wantNodeName string, now time.Time, validity time.Duration) (certPEM []byte, fingerprint string, err error) {
	if err := checkNodeName(wantNodeName); err != nil {
		return nil, "", err
	}
	csr, err := parseCSR(csrDER, NodeCN(wantNodeName))
	if err != nil {
		return nil, "", err
	}
	if len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 ||
		len(csr.DNSNames) > 1 || len(csr.DNSNames) == 1 && csr.DNSNames[0] != wantNodeName {
		return nil, "", policyErr(ReasonUnexpectedSAN, "only the dns name %q is allowed", wantNodeName)
	}
	if err := checkNodeKey(csr.PublicKey); err != nil {
		return nil, "", err
	}
	return ca.signPEM("node", &x509.Certificate{
		Subject:     pkix.Name{CommonName: NodeCN(wantNodeName)},
		DNSNames:    []string{wantNodeName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}, csr.PublicKey, now, validity, NodeCertValidity)
}

// checkNodeKey accepts ECDSA P-256 and Ed25519 only: the kinds every TLS 1.3
// peer supports at full strength. RSA of any size and other curves are
// refused as weak_key; RSA is the likely mistake, so its size is named.
func checkNodeKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return policyErr(ReasonWeakKey, "ecdsa curve %s, want P-256", k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		return policyErr(ReasonWeakKey, "rsa-%d key, want ecdsa P-256 or ed25519", k.N.BitLen())
	default:
		return policyErr(ReasonWeakKey, "key type %T, want ecdsa P-256 or ed25519", pub)
	}
}

// NodeNameFromCert returns the node name from a certificate's CN, which must
// be node-<DNS label>; anything else is a *PolicyError with ReasonNotNodeCert
// (a valid client certificate that is not a node's, such as the control
// plane's, must not pass as one). It does not verify the chain: use
// VerifyNodeCert, or a tls.Config with this CA as ClientCAs, first.
func NodeNameFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", policyErr(ReasonNotNodeCert, "no certificate")
	}
	name, ok := strings.CutPrefix(cert.Subject.CommonName, NodeCNPrefix)
	if !ok || checkNodeName(name) != nil {
		return "", policyErr(ReasonNotNodeCert, "cn %q is not %s<node name>", cert.Subject.CommonName, NodeCNPrefix)
	}
	return name, nil
}

// VerifyNodeCert checks that cert chains to ca at now, allows client
// authentication and names a node, as the API does for a heartbeat. Comparing
// Fingerprint(cert) with the one recorded at enrollment stays the caller's
// job: a valid certificate of a deleted node still passes here.
func VerifyNodeCert(ca *CA, cert *x509.Certificate, now time.Time) error {
	if cert == nil {
		return policyErr(ReasonNotNodeCert, "no certificate")
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       ca.Pool(),
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return fmt.Errorf("%w: node certificate %q: %w", ErrUntrustedCert, cert.Subject.CommonName, err)
	}
	_, err := NodeNameFromCert(cert)
	return err
}

// VerifyControlPlaneCert checks that cert chains to ca at now, allows client
// authentication and has CN ControlPlaneCN, as an agent's API does for every
// caller. The CN check matters: node certificates also allow client auth and
// chain to the same CA, and one node must never drive another's agent.
func VerifyControlPlaneCert(ca *CA, cert *x509.Certificate, now time.Time) error {
	return VerifyControlPlaneCertPool(ca.Pool(), cert, now)
}

// VerifyControlPlaneCertPool is VerifyControlPlaneCert for a holder of the CA
// certificate only, as an agent is: it never has the CA key.
func VerifyControlPlaneCertPool(roots *x509.CertPool, cert *x509.Certificate, now time.Time) error {
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrUntrustedCert)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return fmt.Errorf("%w: control plane certificate %q: %w", ErrUntrustedCert, cert.Subject.CommonName, err)
	}
	if cert.Subject.CommonName != ControlPlaneCN {
		return fmt.Errorf("%w: cn %q is not %s", ErrUntrustedCert, cert.Subject.CommonName, ControlPlaneCN)
	}
	return nil
}
