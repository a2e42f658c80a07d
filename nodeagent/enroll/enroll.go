// Package enroll is the agent's side of node enrollment (DESIGN §6): it
// pins the cluster CA named by a join token (trust on first use), sends a
// CSR for a key generated here, and keeps the resulting identity in the
// agent's state dir, from which LoadState reads it back for serve.
package enroll

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// RenewMargin is how long an existing certificate must still be valid for a
// re-run of Bootstrap to keep it rather than enroll again.
const RenewMargin = 24 * time.Hour

// Options are Bootstrap's inputs.
type Options struct {
	// Server is the control plane's agent-facing URL, https only, e.g.
	// https://api.example.com:7443.
	Server string
	// Token is the join token otxj_<id>.<secret>@<ca fingerprint>.
	Token string
	// Name is the node name, a DNS label; "" means the host name, lower-cased.
	Name string
	// StateDir receives the identity; it is created with mode 0700.
	StateDir string
	// AgentVersion is reported to the control plane.
	AgentVersion string
	// Force replaces an identity for another server or node name already in
	// StateDir (or one that no longer loads) instead of refusing.
	Force bool
	// HTTPClient, when set, lends its Timeout (nothing else: transports and
	// TLS are Bootstrap's own, since they carry the trust decisions). Nil
	// means DefaultTimeout per request.
	HTTPClient *http.Client
}

// DefaultTimeout bounds each HTTP exchange when Options.HTTPClient is nil.
const DefaultTimeout = 30 * time.Second

// Result describes the identity in the state dir after Bootstrap.
type Result struct {
	NodeName        string
	NodeID          string
	CAFingerprint   string
	CertFingerprint string
	NotAfter        time.Time
	StateDir        string
	// AlreadyEnrolled is true when the state dir already held a valid
	// identity for this server and name, and nothing was contacted.
	AlreadyEnrolled bool
}

// hostname is the host-name source, a seam for tests.
var hostname = os.Hostname

// Bootstrap enrolls this node with the control plane at opts.Server and
// writes its identity into opts.StateDir:
//
//  1. parse the join token and take the pinned CA fingerprint from it;
//  2. fetch GET /v1/ca and accept it only if its SHA-256 is the pinned one
//     and the server's own TLS certificate chains to it;
//  3. generate the node key and a CSR for node-<name> (the key stays here);
//  4. POST /v1/enroll over TLS verified against that CA;
//  5. write ca.pem, node.pem, node-key.pem and agent.yaml.
//
// It is idempotent: a state dir that already holds an identity for the same
// server and name, valid for more than RenewMargin and chaining to the
// pinned CA, is returned as is (AlreadyEnrolled) without any network call.
// An identity for another server or name is refused unless opts.Force.
func Bootstrap(ctx context.Context, opts Options) (*Result, error) {
	jt, err := security.ParseJoinToken(opts.Token)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	base, err := parseServer(opts.Server)
	if err != nil {
		return nil, err
	}
	if opts.StateDir == "" {
		return nil, fmt.Errorf("%w: state dir is required", ErrBadOptions)
	}
	name, err := nodeName(opts.Name)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	server := base.String()

	if res, err := existing(opts.StateDir, server, name, jt.CAFingerprint, opts.Force, now); res != nil || err != nil {
		return res, err
	}

	t := &transport{base: base, template: opts.HTTPClient}
	ca, err := t.fetchCA(ctx, jt.CAFingerprint)
	if err != nil {
		return nil, err
	}
	keyPEM, csrDER, err := security.NewNodeKeyAndCSR(name)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	resp, err := t.enroll(ctx, ca, messages.EnrollRequest{
		Token:        opts.Token,
		Name:         name,
		CSR:          string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		Arch:         runtime.GOARCH,
		AgentVersion: opts.AgentVersion,
	})
	if err != nil {
		return nil, err
	}
	cert, err := checkResponse(resp, ca, name, keyPEM, time.Now())
	if err != nil {
		return nil, err
	}
	cfg := Config{Server: server, NodeName: name, NodeID: resp.Node.ID, CAFingerprint: jt.CAFingerprint}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	if err := writeState(opts.StateDir, cfg, caPEM, []byte(resp.Certificate), keyPEM); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	return &Result{
		NodeName:        name,
		NodeID:          resp.Node.ID,
		CAFingerprint:   jt.CAFingerprint,
		CertFingerprint: security.Fingerprint(cert),
		NotAfter:        cert.NotAfter,
		StateDir:        opts.StateDir,
	}, nil
}

// parseServer accepts an https URL with a host and an optional base path,
// and returns it without a trailing slash, query or fragment.
func parseServer(s string) (*url.URL, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: server URL is required", ErrBadOptions)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: server URL: %w", ErrBadOptions, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: server URL %q: want https://host[:port]", ErrBadOptions, s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: server URL %q: no user info, query or fragment allowed", ErrBadOptions, s)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// nodeName returns name, or the lower-cased host name, checked to be a DNS
// label (the node's CN and SAN are built from it).
func nodeName(name string) (string, error) {
	what := "node name"
	if name == "" {
		h, err := hostname()
		if err != nil {
			return "", fmt.Errorf("%w: no node name given and the host name is unknown: %w", ErrBadOptions, err)
		}
		name, what = strings.ToLower(h), "host name"
	}
	if err := messages.ValidateName("node name", name); err != nil {
		return "", fmt.Errorf("%w: %s %q is not a DNS label (a-z, 0-9 and '-', at most %d characters); pass a node name",
			ErrBadOptions, what, name, messages.MaxNameLength)
	}
	return name, nil
}

// existing decides what an identity already in dir means for this run: a
// result to return as is, a refusal, or (nil, nil) to enroll.
func existing(dir, server, name, pinned string, force bool, now time.Time) (*Result, error) {
	st, err := LoadState(dir)
	switch {
	case errors.Is(err, ErrNotEnrolled):
		return nil, nil
	case err != nil && force:
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("%w: %w; replace it with force", ErrIdentityConflict, err)
	}
	c := st.Config
	if c.Server != server || c.NodeName != name {
		if force {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %s is enrolled as %s%s with %s; refusing to enroll as %s%s with %s without force",
			ErrIdentityConflict, dir, security.NodeCNPrefix, c.NodeName, c.Server, security.NodeCNPrefix, name, server)
	}
	// Same server and name: keep the identity if it is still good under the
	// CA this token pins, otherwise enroll again.
	if c.CAFingerprint != pinned || st.Cert.NotAfter.Sub(now) <= RenewMargin {
		return nil, nil
	}
	if _, err := st.Cert.Verify(x509.VerifyOptions{
		Roots:       st.CAPool(),
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, nil
	}
	return &Result{
		NodeName:        c.NodeName,
		NodeID:          c.NodeID,
		CAFingerprint:   c.CAFingerprint,
		CertFingerprint: security.Fingerprint(st.Cert),
		NotAfter:        st.Cert.NotAfter,
		StateDir:        dir,
		AlreadyEnrolled: true,
	}, nil
}

// checkResponse accepts an enrollment answer only if its certificate chains
// to the pinned CA now, names node-<name> and is for our key, and any CA it
// carries is the pinned one.
func checkResponse(resp *messages.EnrollResponse, ca *x509.Certificate, name string, keyPEM []byte, now time.Time) (*x509.Certificate, error) {
	if resp.Node.ID == "" {
		return nil, fmt.Errorf("%w: no node id", ErrBadResponse)
	}
	if resp.Node.Name != "" && resp.Node.Name != name {
		return nil, fmt.Errorf("%w: node enrolled as %q, asked for %q", ErrBadResponse, resp.Node.Name, name)
	}
	if resp.CA != "" {
		got, err := parseCertPEM([]byte(resp.CA))
		if err != nil {
			return nil, fmt.Errorf("%w: ca: %w", ErrBadResponse, err)
		}
		if !got.Equal(ca) {
			return nil, fmt.Errorf("%w: ca %s is not the pinned %s", ErrBadResponse, security.Fingerprint(got), security.Fingerprint(ca))
		}
	}
	pair, err := tls.X509KeyPair([]byte(resp.Certificate), keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %w", ErrBadResponse, err)
	}
	cert := pair.Leaf
	if cert == nil {
		if cert, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: certificate: %w", ErrBadResponse, err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("%w: certificate does not chain to the pinned ca: %w", ErrBadResponse, err)
	}
	got, err := security.NodeNameFromCert(cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	if got != name {
		return nil, fmt.Errorf("%w: certificate is for node %q, asked for %q", ErrBadResponse, got, name)
	}
	return cert, nil
}
