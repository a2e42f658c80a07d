//go:build etcd

package enrollment_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/enrollment"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
	"github.com/otherix/otherix/security"
)

var adminPrincipal = messages.Principal{UserID: "admin-id", Role: "admin"}

// auditLog keeps the entries a Service records, as the control plane's
// audit writer would.
type auditLog struct {
	mu      sync.Mutex
	entries []messages.AuditEntry
}

func (a *auditLog) record(e messages.AuditEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entries = append(a.entries, e)
}

func (a *auditLog) has(action, target, result string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.entries {
		if e.Action == action && e.Target == target && e.Result == result {
			return true
		}
	}
	return false
}

var quietLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// newService is a Service over st with the cluster CA loaded from it, the
// production heartbeat interval and clock as the token and enrollment clock.
func newService(t *testing.T, st *store.Store, clock *testutil.Clock) (*enrollment.Service, *auditLog) {
	t.Helper()
	ca, err := enrollment.LoadCA(t.Context(), st, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	audit := &auditLog{}
	return enrollment.New(enrollment.Config{Store: st, CA: ca, Log: quietLog, Now: clock.Now,
		HeartbeatInterval: 30 * time.Second, Audit: audit.record, AuditFailure: audit.record}), audit
}

// start is a Service over a fresh embedded etcd member.
func start(t *testing.T) (*enrollment.Service, *store.Store, *testutil.Clock, *auditLog) {
	t.Helper()
	st := storetest.New(t)
	clock := testutil.NewClock(time.Now())
	s, audit := newService(t, st, clock)
	return s, st, clock, audit
}

func joinToken(t *testing.T, s *enrollment.Service, req messages.CreateJoinTokenRequest) string {
	t.Helper()
	created, err := s.CreateJoinToken(t.Context(), adminPrincipal, req)
	if err != nil {
		t.Fatalf("create join token: %v", err)
	}
	if !strings.HasSuffix(created.Token, "@"+s.CA().Fingerprint()) || created.JoinToken.NodeName != req.NodeName {
		t.Fatalf("created join token %+v", created)
	}
	return created.Token
}

func csrPEM(t *testing.T, name string) string {
	t.Helper()
	_, der, err := security.NewNodeKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func enroll(s *enrollment.Service, ctx context.Context, token, name string, csr string) (*messages.EnrollResponse, error) {
	return s.Enroll(ctx, messages.EnrollRequest{Token: token, Name: name, CSR: csr, Arch: "amd64", AgentVersion: "0.1.0"}, "192.0.2.7")
}

// enrollNode enrolls name and returns its node and certificate.
func enrollNode(t *testing.T, s *enrollment.Service, name string) (messages.Node, *x509.Certificate) {
	t.Helper()
	resp, err := enroll(s, t.Context(), joinToken(t, s, messages.CreateJoinTokenRequest{}), name, csrPEM(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Node, parseCert(t, []byte(resp.Certificate))
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantCode(t *testing.T, err error, code string) *messages.Error {
	t.Helper()
	var e *messages.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
	return e
}

func wantInvalidJoinToken(t *testing.T, err error) {
	t.Helper()
	e := wantCode(t, err, "invalid_join_token")
	if e.Kind != messages.KindUnauthenticated || e.Message != "the join token is invalid, expired or already used" {
		t.Fatalf("invalid join token error %+v", e)
	}
}

func storePage() store.Page { return store.Page{} }
