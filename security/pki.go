package security

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Validity periods of the cluster PKI (DESIGN §6). The CA lives long because
// rotating it means re-enrolling every node; leaves live short because they
// renew themselves over the existing mTLS channel.
const (
	CAValidity         = 10 * 365 * 24 * time.Hour
	ServerCertValidity = 365 * 24 * time.Hour
	ClientCertValidity = 365 * 24 * time.Hour
	NodeCertValidity   = 90 * 24 * time.Hour

	// ControlPlaneCN is the CN of the control plane's client certificate
	// towards agents; the agent's API accepts no other client identity.
	ControlPlaneCN = "otherix-control-plane"

	// NodeCNPrefix starts every node certificate's CN: node-<name>.
	NodeCNPrefix = "node-"

	// clockSkew backdates every NotBefore so that a peer whose clock runs a
	// little behind ours does not reject a certificate issued a second ago.
	clockSkew = 5 * time.Minute
)

// PKI sentinels. Returned errors wrap them with a short reason; none carries
// key material.
var (
	// ErrInvalidCA reports CA material that does not load: bad PEM, a key
	// that does not match the certificate, or a certificate that is not a
	// self-signed CA.
	ErrInvalidCA = errors.New("security: invalid CA")
	// ErrCANotValid reports an issuance request at a time outside the CA's
	// own validity; a certificate issued then could never verify.
	ErrCANotValid = errors.New("security: CA not valid at this time")
	// ErrBadCertRequest reports issuance arguments no valid flow produces: no
	// or malformed SANs, a bad CN, a negative validity.
	ErrBadCertRequest = errors.New("security: bad certificate request")
	// ErrBadFingerprint reports a fingerprint that is not 32 hex bytes.
	ErrBadFingerprint = errors.New("security: malformed certificate fingerprint")
	// ErrUnsafeKeyPath reports a key file path that is a symbolic link, which
	// WriteKeyFile refuses so a planted link cannot redirect where a private
	// key lands.
	ErrUnsafeKeyPath = errors.New("security: key file path is a symbolic link")
	// ErrUntrustedCert reports a peer certificate that does not chain to the
	// cluster CA at the given time or lacks the needed usage; it also wraps
	// the x509 error for logs.
	ErrUntrustedCert = errors.New("security: certificate not trusted")
)

// CA is the cluster certificate authority: its self-signed certificate and
// private key. It is immutable after construction and safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certDER []byte
	key     crypto.Signer // *ecdsa.PrivateKey (P-256) or ed25519.PrivateKey
}

// NewCA generates a cluster CA valid for CAValidity from now: an ECDSA P-256
// key and a self-signed certificate that may sign leaves only (MaxPathLen 0),
// so a stolen leaf key can never mint further certificates.
func NewCA(clusterName string, now time.Time) (*CA, error) {
	if err := checkSubjectText(clusterName); err != nil {
		return nil, fmt.Errorf("%w: cluster name %v", ErrBadCertRequest, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject: pkix.Name{
			CommonName:         "Otherix cluster CA",
			Organization:       []string{"Otherix"},
			OrganizationalUnit: []string{clusterName},
		},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true, // without it, MaxPathLen 0 means "unlimited"
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	return &CA{cert: cert, certDER: der, key: key}, nil
}

// LoadCA rebuilds a CA from CertPEM and KeyPEM output (a CERTIFICATE block and
// a PKCS#8 PRIVATE KEY block), as an HA replica does from etcd. It refuses a
// key that does not match the certificate and a certificate that is not a
// self-signed CA allowed to sign certificates, so a mix-up of files fails
// here rather than as handshake errors on every node. Errors wrap ErrInvalidCA.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: no CERTIFICATE PEM block", ErrInvalidCA)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: parse certificate: %v", ErrInvalidCA, err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: certificate is not a CA", ErrInvalidCA)
	}
	// The CA is installed as a trust root, so it must be self-signed.
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return nil, fmt.Errorf("%w: certificate is not self-signed: %v", ErrInvalidCA, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: no PKCS#8 PRIVATE KEY PEM block", ErrInvalidCA)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		// The parser's error never includes key bytes.
		return nil, fmt.Errorf("%w: parse private key: %v", ErrInvalidCA, err)
	}
	var key crypto.Signer
	switch k := parsed.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ecdsa key is not P-256", ErrInvalidCA)
		}
		key = k
	case ed25519.PrivateKey:
		key = k
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrInvalidCA, parsed)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: private key does not match certificate", ErrInvalidCA)
	}
	return &CA{cert: cert, certDER: cb.Bytes, key: key}, nil
}

// Certificate returns the CA certificate. Callers must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate as a PEM CERTIFICATE block: the public
// half agents fetch at bootstrap and pin by fingerprint.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.certDER})
}

// KeyPEM returns the CA private key as a PKCS#8 PEM block, for WriteKeyFile
// and for the copy kept in etcd so HA replicas can sign.
func (ca *CA) KeyPEM() ([]byte, error) {
	return marshalKeyPEM(ca.key)
}

// Fingerprint returns the CA's SHA-256 fingerprint, the value join tokens
// carry and `otherix cluster info` shows.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.cert) }

// Pool returns a new certificate pool holding only this CA. Each call builds
// a fresh pool so a caller adding to it cannot widen another's trust.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Fingerprint returns the lowercase hex SHA-256 of cert's DER encoding (64
// digits), the form NewJoinToken takes and the API records per node. It
// returns "" for a nil certificate.
func Fingerprint(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// ParseFingerprint normalises a fingerprint typed or pasted by a user: 64 hex
// digits, or 32 colon-separated pairs as openssl prints them, either case,
// surrounding space ignored. It returns 64 lowercase hex digits, the only
// form the rest of the code compares, or an error wrapping ErrBadFingerprint.
func ParseFingerprint(s string) (string, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, ":") {
		parts := strings.Split(s, ":")
		if len(parts) != sha256.Size {
			return "", fmt.Errorf("%w: want %d colon-separated bytes", ErrBadFingerprint, sha256.Size)
		}
		for _, p := range parts {
			if len(p) != 2 {
				return "", fmt.Errorf("%w: each colon-separated group must be 2 hex digits", ErrBadFingerprint)
			}
		}
		s = strings.Join(parts, "")
	}
	s = strings.ToLower(s)
	if !isLowerHex(s, fingerprintHexLen) {
		return "", fmt.Errorf("%w: want %d hex digits", ErrBadFingerprint, fingerprintHexLen)
	}
	return s, nil
}

// IssueServerCert issues a TLS server certificate for the API and
// agent-facing listeners. Each SAN is an IP address or a DNS name (a leading
// "*." label is allowed); the leaf key is generated here and never leaves the
// returned tls.Certificate. validity 0 means ServerCertValidity; the result
// never outlives the CA.
func (ca *CA) IssueServerCert(sans []string, now time.Time, validity time.Duration) (tls.Certificate, error) {
	if len(sans) == 0 {
		return tls.Certificate{}, fmt.Errorf("%w: server certificate needs at least one SAN", ErrBadCertRequest)
	}
	var dns []string
	var ips []net.IP
	for _, s := range sans {
		if addr, err := netip.ParseAddr(s); err == nil {
			if addr.Zone() != "" {
				return tls.Certificate{}, fmt.Errorf("%w: ip SAN %q has a zone", ErrBadCertRequest, s)
			}
			ips = append(ips, net.IP(addr.Unmap().AsSlice()))
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(s, "."))
		if !isDNSName(name) {
			return tls.Certificate{}, fmt.Errorf("%w: SAN %q is neither an IP address nor a DNS name", ErrBadCertRequest, s)
		}
		if name == ReplicaPeerSAN || name == "*.otherix.invalid" {
			return tls.Certificate{}, fmt.Errorf("%w: SAN %q is reserved for replica peer certificates", ErrBadCertRequest, s)
		}
		dns = append(dns, name)
	}
	cn := sans[0]
	if len(dns) > 0 {
		cn = dns[0]
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dns,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return ca.issueLeaf(tmpl, now, validity, ServerCertValidity)
}

// IssueClientCert issues a TLS client certificate with the given CN, such as
// ControlPlaneCN for the control plane's calls to agents. A CN starting with
// NodeCNPrefix is refused: node identities come only from SignNodeCSR, so a
// client certificate can never pass for a node. validity 0 means
// ClientCertValidity; the result never outlives the CA. A CN starting with
// ReplicaCNPrefix is refused the same way.
func (ca *CA) IssueClientCert(cn string, now time.Time, validity time.Duration) (tls.Certificate, error) {
	if err := checkSubjectText(cn); err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: client cn %v", ErrBadCertRequest, err)
	}
	if strings.HasPrefix(cn, NodeCNPrefix) {
		return tls.Certificate{}, fmt.Errorf("%w: client cn %q is reserved for nodes", ErrBadCertRequest, cn)
	}
	if strings.HasPrefix(cn, ReplicaCNPrefix) {
		return tls.Certificate{}, fmt.Errorf("%w: client cn %q is reserved for replicas", ErrBadCertRequest, cn)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issueLeaf(tmpl, now, validity, ClientCertValidity)
}

// issueLeaf generates a P-256 key, signs tmpl for it and returns a
// tls.Certificate with Leaf set, so callers need not parse it again.
func (ca *CA) issueLeaf(tmpl *x509.Certificate, now time.Time, validity, def time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate leaf key: %w", err)
	}
	der, err := ca.sign(tmpl, key.Public(), now, validity, def)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse leaf certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// sign fills in what every leaf shares (serial, validity window, key usage,
// no CA rights) and signs tmpl for pub with the CA key.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, now time.Time, validity, def time.Duration) ([]byte, error) {
	notBefore, notAfter, err := ca.window(now, validity, def)
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = newSerial()
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	// Ed25519 and ECDSA keys only sign in TLS 1.3/ECDHE, so
	// DigitalSignature is the one usage a leaf needs.
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

// window returns a leaf's validity: from now (less clockSkew, but not before
// the CA) for validity (def when 0), cut at the CA's NotAfter because a
// chain is only as valid as its root.
func (ca *CA) window(now time.Time, validity, def time.Duration) (notBefore, notAfter time.Time, err error) {
	if validity < 0 {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: negative validity %v", ErrBadCertRequest, validity)
	}
	if validity == 0 {
		validity = def
	}
	if now.Before(ca.cert.NotBefore) || !now.Before(ca.cert.NotAfter) {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: %s outside %s..%s", ErrCANotValid,
			now.UTC().Format(time.RFC3339), ca.cert.NotBefore.UTC().Format(time.RFC3339),
			ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notBefore = now.Add(-clockSkew)
	if notBefore.Before(ca.cert.NotBefore) {
		notBefore = ca.cert.NotBefore
	}
	notAfter = now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	return notBefore, notAfter, nil
}

// WriteKeyFile writes a private key (or any secret PEM) to path with mode
// 0600, atomically: a temporary file created 0600 in the same directory is
// written, synced and renamed over path, so a crash leaves the old file or
// the new one, never a truncated key, and the key is never readable by
// others even for an instant. A symbolic link at path is refused with
// ErrUnsafeKeyPath. This is the package's only file I/O.
func WriteKeyFile(path string, keyPEM []byte) (err error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("write key file %s: %w", path, ErrUnsafeKeyPath)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("write key file: %w", err)
	}
	dir := filepath.Dir(path)
	// CreateTemp opens with O_EXCL and mode 0600, so nobody else can have
	// opened the file before the key is in it.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// Chmod again in case a future CreateTemp widens its default; umask can
	// only narrow 0600.
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if _, err = f.Write(keyPEM); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write key file: sync: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	// rename replaces a symlink planted since the Lstat rather than following
	// it, so the check above cannot be raced into writing elsewhere.
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	// Sync the directory so the rename itself survives a power cut.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// marshalKeyPEM encodes a private key as a PKCS#8 PEM block.
func marshalKeyPEM(key crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// newSerial returns a random, positive, non-zero 128-bit serial number;
// random serials keep certificates unpredictable and need no counter shared
// between HA replicas.
func newSerial() *big.Int {
	for {
		n := new(big.Int).SetBytes(randomBytes(16))
		if n.Sign() > 0 {
			return n
		}
	}
}

// subjectKeyID derives a key identifier from the SHA-256 of the public key
// (RFC 7093, truncated to 160 bits), so the chain links by key and a
// re-issued CA with the same key keeps its id.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// checkSubjectText accepts 1–64 bytes of printable UTF-8: 64 is the X.520
// upper bound for a CN or OU, and control characters in a subject end up in
// logs and terminals.
func checkSubjectText(s string) error {
	if s == "" || len(s) > 64 {
		return errors.New("must be 1-64 bytes")
	}
	if !utf8.ValidString(s) {
		return errors.New("must be valid UTF-8")
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return errors.New("must be printable")
		}
	}
	return nil
}

// isDNSName reports whether s is a lowercase host name of DNS labels, at
// most 253 bytes, optionally starting with a "*." wildcard label.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	s = strings.TrimPrefix(s, "*.")
	for _, label := range strings.Split(s, ".") {
		if !isDNSLabel(label) {
			return false
		}
	}
	return true
}

// isDNSLabel reports whether s is 1–63 of a–z, 0–9 and '-', neither starting
// nor ending with '-' (RFC 1123).
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
