package enroll

import (
	"github.com/otherix/otherix/http/apierror"

	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// Body limits: a CA certificate is a few hundred bytes, an enrollment answer
// a few kilobytes; anything far bigger is not our server.
const (
	maxCABody     = 64 << 10
	maxEnrollBody = 1 << 20
)

// transport makes the two enrollment calls, each over its own TLS setup.
type transport struct {
	base     *url.URL     // server URL, normalised by parseServer
	template *http.Client // Options.HTTPClient: only its Timeout is used
}

// client returns an HTTP client whose TLS is tlsConf and which follows no
// redirects: both endpoints answer directly, and a redirect is not
// something enrollment should be talked into.
func (t *transport) client(tlsConf *tls.Config) *http.Client {
	timeout := DefaultTimeout
	if t.template != nil {
		timeout = t.template.Timeout
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tlsConf,
			TLSHandshakeTimeout: 10 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (t *transport) url(path string) string {
	u := *t.base
	u.Path += path
	return u.String()
}

// fetchCA is trust on first use. The handshake itself verifies nothing
// (InsecureSkipVerify) because the CA to verify against is what we are
// fetching; instead, once GET /v1/ca has answered, the CA is accepted only
// if its SHA-256 is the pinned one, and then the certificates the server
// presented on that very connection (resp.TLS) must chain to it and name
// the host we dialled. Until both hold, nothing from the answer is used.
func (t *transport) fetchCA(ctx context.Context, pinned string) (*x509.Certificate, error) {
	c := t.client(&tls.Config{
		InsecureSkipVerify: true, // verified below against the pinned CA
		MinVersion:         tls.VersionTLS12,
	})
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url("/v1/ca"), nil)
	if err != nil {
		return nil, fmt.Errorf("enroll: fetch ca: %w", err)
	}
	req.Header.Set("Accept", "application/x-pem-file")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll: fetch ca: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCABody+1))
	if err != nil {
		return nil, fmt.Errorf("enroll: fetch ca: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("enroll: fetch ca: %w", serverError(resp.StatusCode, body))
	}
	if len(body) > maxCABody {
		return nil, fmt.Errorf("%w: GET /v1/ca answered more than %d bytes", ErrUntrustedServer, maxCABody)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return nil, fmt.Errorf("%w: no server certificate", ErrUntrustedServer)
	}
	ca, err := parseCertPEM(body)
	if err != nil {
		return nil, fmt.Errorf("%w: GET /v1/ca: %w", ErrUntrustedServer, err)
	}
	if fp := security.Fingerprint(ca); fp != pinned {
		return nil, &FingerprintMismatchError{Presented: fp, Pinned: pinned}
	}
	// The pin proves these are the cluster's CA bytes, which are public; it
	// is the chain below that proves the server holds a key the CA certified.
	if !ca.IsCA || ca.CheckSignatureFrom(ca) != nil {
		return nil, fmt.Errorf("%w: pinned certificate is not a self-signed CA", ErrUntrustedServer)
	}
	if err := verifyServer(resp.TLS.PeerCertificates, ca, t.base.Hostname()); err != nil {
		return nil, err
	}
	return ca, nil
}

// verifyServer checks the server's chain against ca alone, for server auth
// and the host name (or IP) dialled.
func verifyServer(peer []*x509.Certificate, ca *x509.Certificate, host string) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	if _, err := peer[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       host,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("%w: server certificate %q does not chain to the pinned ca %s: %w",
			ErrUntrustedServer, peer[0].Subject.CommonName, security.Fingerprint(ca), err)
	}
	return nil
}

// enroll POSTs the request over TLS verified the ordinary way against the
// pinned CA only.
func (t *transport) enroll(ctx context.Context, ca *x509.Certificate, er messages.EnrollRequest) (*messages.EnrollResponse, error) {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	c := t.client(&tls.Config{
		RootCAs:    roots,
		ServerName: t.base.Hostname(),
		MinVersion: tls.VersionTLS12,
	})
	defer c.CloseIdleConnections()
	raw, err := json.Marshal(er)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url("/v1/enroll"), bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll: post: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxEnrollBody+1))
	if err != nil {
		return nil, fmt.Errorf("enroll: post: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("enroll: %w", serverError(resp.StatusCode, body))
	}
	if len(body) > maxEnrollBody {
		return nil, fmt.Errorf("%w: answer over %d bytes", ErrBadResponse, maxEnrollBody)
	}
	var out messages.EnrollResponse
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	return &out, nil
}

// serverError decodes the API's error envelope.
func serverError(status int, body []byte) *ServerError { return apierror.Decode(status, body) }

// FetchPinnedCA is the trust-on-first-use step of enrollment for other
// joiners (a new otherix-api replica): GET /v1/ca from server (an https
// URL), accepted only if its SHA-256 is pinned and the server's own
// certificate on that connection chains to it for the host dialled.
func FetchPinnedCA(ctx context.Context, server, pinned string, timeout time.Duration) (*x509.Certificate, error) {
	base, err := parseServer(server)
	if err != nil {
		return nil, err
	}
	t := &transport{base: base, template: &http.Client{Timeout: timeout}}
	return t.fetchCA(ctx, pinned)
}
