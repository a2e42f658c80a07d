package enroll

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/otherix/otherix/security"

	"github.com/otherix/otherix/internal/atomicfile"
)

// Files of the state dir. agent.yaml is written last: its presence is what
// says "enrolled", so a bootstrap that died half-way leaves no identity that
// LoadState would accept.
const (
	CAFile     = "ca.pem"       // cluster CA certificate, pinned at bootstrap
	CertFile   = "node.pem"     // node certificate, CN node-<name>
	KeyFile    = "node-key.pem" // node private key (PKCS#8), mode 0600
	ConfigFile = "agent.yaml"   // Config, mode 0600

	stateDirMode = 0o700
	secretMode   = 0o600
	publicMode   = 0o644
)

// Config is agent.yaml: what the agent needs besides its key pair to talk to
// its control plane.
type Config struct {
	// Server is the control plane's agent-facing URL, normalised (no
	// trailing slash).
	Server string `json:"server"`
	// NodeName is the enrolled name; the certificate's CN is node-<NodeName>.
	NodeName string `json:"node_name"`
	// NodeID is the id the control plane gave the node at enrollment.
	NodeID string `json:"node_id"`
	// CAFingerprint is the SHA-256 of ca.pem, the one the join token pinned.
	CAFingerprint string `json:"ca_fingerprint"`
}

// State is an enrolled node's identity as LoadState reads it back.
type State struct {
	Dir    string
	Config Config
	// CA is the cluster CA certificate from ca.pem.
	CA *x509.Certificate
	// Cert is the node certificate from node.pem.
	Cert *x509.Certificate
	// TLSCert is the node's key pair, ready for a tls.Config (client
	// certificate towards the API, server certificate of the agent's API).
	TLSCert tls.Certificate
}

// CAPool returns a new pool holding only the cluster CA.
func (s *State) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.CA)
	return p
}

// LoadState reads the identity bootstrap wrote into dir and checks that its
// parts agree: the key matches the certificate, the certificate's CN is
// node-<node_name>, it is signed by ca.pem, and ca.pem has the recorded
// fingerprint. It does not check validity dates: an expired certificate
// still loads, so the caller can say so rather than "not enrolled". A
// missing agent.yaml is ErrNotEnrolled; anything else wraps ErrInvalidState.
func LoadState(dir string) (*State, error) {
	raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in %s", ErrNotEnrolled, ConfigFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	var cfg Config
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidState, ConfigFile, err)
	}
	if cfg.Server == "" || cfg.NodeName == "" || cfg.NodeID == "" || cfg.CAFingerprint == "" {
		return nil, fmt.Errorf("%w: %s: server, node_name, node_id and ca_fingerprint are required", ErrInvalidState, ConfigFile)
	}
	st := &State{Dir: dir, Config: cfg}
	if err := completeRenewal(dir); err != nil {
		return nil, fmt.Errorf("%w: finish an interrupted certificate renewal: %w", ErrInvalidState, err)
	}

	if st.CA, err = readCert(filepath.Join(dir, CAFile)); err != nil {
		return nil, err
	}
	if fp := security.Fingerprint(st.CA); fp != cfg.CAFingerprint {
		return nil, fmt.Errorf("%w: %s has fingerprint %s, %s records %s", ErrInvalidState, CAFile, fp, ConfigFile, cfg.CAFingerprint)
	}

	keyPath := filepath.Join(dir, KeyFile)
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	// Like ssh: a key others can read is no longer only ours.
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, want 0600", ErrInvalidState, keyPath, fi.Mode().Perm())
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	// X509KeyPair refuses a key that does not match the certificate.
	st.TLSCert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %s and %s: %w", ErrInvalidState, CertFile, KeyFile, err)
	}
	st.Cert = st.TLSCert.Leaf
	if st.Cert == nil {
		if st.Cert, err = x509.ParseCertificate(st.TLSCert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidState, CertFile, err)
		}
	}
	name, err := security.NodeNameFromCert(st.Cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidState, CertFile, err)
	}
	if name != cfg.NodeName {
		return nil, fmt.Errorf("%w: %s is for node %q, %s names %q", ErrInvalidState, CertFile, name, ConfigFile, cfg.NodeName)
	}
	// Signature only, not dates (see above).
	if err := st.Cert.CheckSignatureFrom(st.CA); err != nil {
		return nil, fmt.Errorf("%w: %s is not signed by %s: %w", ErrInvalidState, CertFile, CAFile, err)
	}
	return st, nil
}

// readCert reads one PEM CERTIFICATE from path.
func readCert(path string) (*x509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	cert, err := parseCertPEM(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidState, path, err)
	}
	return cert, nil
}

// parseCertPEM parses the first block of raw, which must be a CERTIFICATE.
func parseCertPEM(raw []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return x509.ParseCertificate(b.Bytes)
}

// writeState writes a new identity into dir (created 0700). agent.yaml is
// removed first and written last, so a crash in between leaves a dir that
// LoadState reports as not enrolled rather than a mix of two identities.
func writeState(dir string, cfg Config, caPEM, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, stateDirMode); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	// MkdirAll leaves an existing dir's mode alone; it is about to hold a
	// private key.
	if err := os.Chmod(dir, stateDirMode); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, ConfigFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write state: %w", err)
	}
	if err := removeReplicas(dir); err != nil {
		return err
	}
	if err := security.WriteKeyFile(filepath.Join(dir, KeyFile), keyPEM); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, CAFile), caPEM, publicMode); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, CertFile), certPEM, publicMode); err != nil {
		return err
	}
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("write %s: %w", ConfigFile, err)
	}
	return atomicfile.Write(filepath.Join(dir, ConfigFile), raw, secretMode)
}
