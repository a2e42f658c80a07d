package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/security"
)

// Error codes of TLS trust failures.
const (
	codeUntrusted  = "untrusted_server"
	codeCAMismatch = "ca_fingerprint_mismatch"
)

// maxCABody bounds GET /v1/ca: a CA certificate is a few hundred bytes.
const maxCABody = 64 << 10

// msgUnknownCA is the error of an https server whose certificate no CA of
// this machine signed, with no cluster CA pinned for it.
const msgUnknownCA = "the server's certificate is not signed by a CA this machine trusts; pass --ca-fingerprint (otherix-api prints it when it starts)"

// isHTTPS reports whether server is an https:// URL.
func isHTTPS(server string) bool {
	u, err := url.Parse(server)
	return err == nil && u.Scheme == "https"
}

// parseCACert parses one PEM CERTIFICATE that must be a self-signed CA.
func parseCACert(b []byte) (*x509.Certificate, error) {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("more than one PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || cert.CheckSignatureFrom(cert) != nil {
		return nil, errors.New("not a self-signed CA certificate")
	}
	return cert, nil
}

// encodeCA is the PEM a context stores for ca.
func encodeCA(ca *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))
}

// contextCA returns the CA certificate cx pins for an https server, checked
// against its fingerprint, or nil when cx pins none (plain http, or a
// server trusted through the system roots).
func contextCA(cx *cliContext) (*x509.Certificate, error) {
	if cx == nil || !isHTTPS(cx.Server) {
		return nil, nil
	}
	if cx.CAPEM == "" {
		if cx.CAFingerprint != "" {
			return nil, codedf(codeUntrusted, "context %q pins the cluster CA %s but holds no CA certificate: log in again with otherix login %s --ca-fingerprint %s",
				cx.Name, cx.CAFingerprint, cx.Server, cx.CAFingerprint)
		}
		return nil, nil
	}
	ca, err := parseCACert([]byte(cx.CAPEM))
	if err != nil {
		return nil, codedf(codeUntrusted, "context %q: ca_pem: %v: log in again with --ca-fingerprint", cx.Name, err)
	}
	if fp := security.Fingerprint(ca); cx.CAFingerprint != "" && fp != cx.CAFingerprint {
		return nil, codedf(codeCAMismatch, "context %q: ca_pem has fingerprint %s, but ca_fingerprint is %s: log in again with --ca-fingerprint", cx.Name, fp, cx.CAFingerprint)
	}
	return ca, nil
}

// transportOptions returns the client options that make every request of
// cx trust its pinned CA alone (not the system pool), and records the pin
// for error messages. Without a pin there are none.
func (a *app) transportOptions(cx *cliContext) ([]client.Option, error) {
	a.pinnedCA = ""
	ca, err := contextCA(cx)
	if err != nil || ca == nil {
		return nil, err
	}
	a.pinnedCA = security.Fingerprint(ca)
	return []client.Option{client.WithHTTPClient(pinnedHTTPClient(ca, a.sessionCache(a.pinnedCA)))}, nil
}

// sessionCache is the TLS session cache for connections that trust the CA
// pinned by fingerprint pin (tlssessions.go), in the config's directory;
// nil when there is no config path.
func (a *app) sessionCache(pin string) tls.ClientSessionCache {
	path, err := a.configPath()
	if err != nil {
		return nil
	}
	return newFileSessionCache(filepath.Dir(path), pin)
}

// pinnedHTTPClient is an HTTP client whose TLS trusts ca and nothing else;
// with cache set, it resumes TLS sessions kept there.
func pinnedHTTPClient(ca *x509.Certificate, cache tls.ClientSessionCache) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cache != nil {
		tr.TLSClientConfig.ClientSessionCache = cache
	}
	return &http.Client{Transport: tr}
}

// fetchPinnedCA is trust on first use, as node enrollment does it: the
// handshake verifies nothing (InsecureSkipVerify) because the CA to verify
// against is what is being fetched. Once GET /v1/ca has answered, its CA is
// accepted only if its SHA-256 is pinned, and then the chain the server
// presented on that very connection must verify against it for the host
// dialled. Nothing from the answer is used before both hold.
func fetchPinnedCA(ctx context.Context, server, pinned string) (*x509.Certificate, error) {
	u, err := url.Parse(server)
	if err != nil {
		return nil, usageError(fmt.Errorf("login URL: %w", err))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{
		InsecureSkipVerify: true, // verified below against the pinned CA
		MinVersion:         tls.VersionTLS12,
	}
	hc := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(server, "/")+"/v1/ca", nil)
	if err != nil {
		return nil, usageError(fmt.Errorf("login URL: %w", err))
	}
	req.Header.Set("Accept", "application/x-pem-file")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCABody+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, codedf(codeUntrusted, "GET %s/v1/ca answered %s: cannot pin the cluster CA", server, resp.Status)
	}
	if len(body) > maxCABody {
		return nil, codedf(codeUntrusted, "GET %s/v1/ca answered more than %d bytes: not a CA certificate", server, maxCABody)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return nil, codedf(codeUntrusted, "%s presented no TLS certificate", server)
	}
	block, _ := pem.Decode(body)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, codedf(codeUntrusted, "GET %s/v1/ca did not answer a PEM certificate", server)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, codedf(codeUntrusted, "GET %s/v1/ca: %v", server, err)
	}
	if fp := security.Fingerprint(ca); fp != pinned {
		return nil, codedf(codeCAMismatch, "ca fingerprint mismatch: server presented %s, pinned %s", fp, pinned)
	}
	// The pin proves these are the cluster CA's bytes, which are public; the
	// chain below proves the server holds a key that CA certified.
	if !ca.IsCA || ca.CheckSignatureFrom(ca) != nil {
		return nil, codedf(codeUntrusted, "the pinned certificate from %s is not a self-signed CA", server)
	}
	peer := resp.TLS.PeerCertificates
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	if _, err := peer[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       u.Hostname(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, codedf(codeUntrusted, "the certificate %s presented does not verify against the pinned cluster CA %s: %v", server, pinned, err)
	}
	return ca, nil
}

// explainTLS turns a failed TLS verification into a coded error, or
// returns nil when err is not one.
func (a *app) explainTLS(err error) error {
	var unknown x509.UnknownAuthorityError
	var verr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknown) && a.pinnedCA != "":
		return codedf(codeUntrusted, "%s presented a certificate not signed by the cluster CA pinned for it (%s); refusing it. If the cluster CA really changed, log in again with --ca-fingerprint", a.server, a.pinnedCA)
	case errors.As(err, &unknown):
		return codedf(codeUntrusted, "%s", msgUnknownCA)
	case errors.As(err, &verr):
		return codedf(codeUntrusted, "the TLS certificate of %s does not verify: %v", a.server, verr.Err)
	}
	return nil
}
