package enroll

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"

	"github.com/otherix/otherix/internal/atomicfile"
)

// RenewPath is the renewal endpoint on the agent-facing listener.
const RenewPath = "/v1/renew"

// A renewal stages the new pair next to the current one and renames both
// into place only once the certificate has arrived; LoadState finishes a
// renewal a crash interrupted.
const (
	keyNext  = KeyFile + ".next"
	certNext = CertFile + ".next"
)

// Identity is the node's current key pair, shared by the heartbeat client
// and the agent's API server, so a renewed certificate is used at once by
// both without restarting anything.
type Identity struct {
	cur atomic.Pointer[tls.Certificate]
}

// NewIdentity holds c.
func NewIdentity(c tls.Certificate) *Identity {
	i := &Identity{}
	i.Set(c)
	return i
}

// Get returns the current pair.
func (i *Identity) Get() *tls.Certificate { return i.cur.Load() }

// Set replaces the pair.
func (i *Identity) Set(c tls.Certificate) { i.cur.Store(&c) }

// RenewalDue reports whether cert expires within before, or, when before
// is 0, has used two thirds of its lifetime: the last third leaves room for
// a control plane that is down for a while.
func RenewalDue(cert *x509.Certificate, now time.Time, before time.Duration) bool {
	if before <= 0 {
		before = cert.NotAfter.Sub(cert.NotBefore) / 3
	}
	return now.After(cert.NotAfter.Add(-before))
}

// Renew obtains a new certificate for a new key over client (mutual TLS
// with the current certificate), installs the pair in st.Dir and returns
// the state read back from disk.
func Renew(ctx context.Context, st *State, client *http.Client, now time.Time) (*State, error) {
	name := st.Config.NodeName
	keyPEM, csrDER, err := security.NewNodeKeyAndCSR(name)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	if err := security.WriteKeyFile(filepath.Join(st.Dir, keyNext), keyPEM); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	body, err := json.Marshal(messages.RenewRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(st.Config.Server, "/")+RenewPath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("renew: post: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxEnrollBody+1))
	if err != nil {
		return nil, fmt.Errorf("renew: post: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("renew: %w", serverError(resp.StatusCode, raw))
	}
	var out messages.RenewResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("renew: %w: %w", ErrBadResponse, err)
	}
	check := &messages.EnrollResponse{Node: messages.Node{ID: st.Config.NodeID, Name: name}, Certificate: out.Certificate, CA: out.CA}
	if _, err := checkResponse(check, st.CA, name, keyPEM, now); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(st.Dir, certNext), []byte(out.Certificate), publicMode); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	if err := completeRenewal(st.Dir); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	return LoadState(st.Dir)
}

// completeRenewal installs a staged pair. The key is renamed first: if a
// crash falls between the renames, the certificate is still staged and the
// next call installs it. A staged key without a certificate is a renewal
// whose answer never came; it is dropped (the control plane still accepts
// the current certificate) and the next renewal starts afresh.
func completeRenewal(dir string) error {
	_, certErr := os.Stat(filepath.Join(dir, certNext))
	_, keyErr := os.Stat(filepath.Join(dir, keyNext))
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return nil
	case errors.Is(certErr, fs.ErrNotExist):
		return os.Remove(filepath.Join(dir, keyNext))
	}
	if keyErr == nil {
		if err := os.Rename(filepath.Join(dir, keyNext), filepath.Join(dir, KeyFile)); err != nil {
			return err
		}
	}
	if err := os.Rename(filepath.Join(dir, certNext), filepath.Join(dir, CertFile)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
