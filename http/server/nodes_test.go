package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/enroll"
	"github.com/otherix/otherix/security"
)

// TestNodeRoutes: the static join-tokens segment and the :name parameter
// live side by side, join tokens are admin only, and a created token is
// never kept for idempotency replays.
func TestNodeRoutes(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	rec := req{method: "GET", path: "/v1/ca", header: map[string]string{"Authorization": ""}}.do(t, s)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != pemContentType || !strings.Contains(rec.Body.String(), "BEGIN CERTIFICATE") {
		t.Fatalf("GET /v1/ca: %d %q %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}

	rec = req{method: "POST", path: "/v1/nodes/join-tokens", body: `{"ttl":"30m","node_name":"n1"}`,
		header: map[string]string{HeaderIdempotencyKey: "k1"}}.do(t, s)
	if rec.Code != http.StatusCreated || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("create join token: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	var created messages.CreatedJoinToken
	if err := json.Unmarshal(rec.Body.Bytes(), &created); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.Token, security.JoinTokenPrefix) || created.JoinToken.NodeName != "n1" || created.JoinToken.CreatedBy != "u-admin" {
		t.Fatalf("created %+v", created)
	}
	if n := cp.idem.len(); n != 0 {
		t.Errorf("join token create stored %d idempotency records", n)
	}
	rec = req{method: "GET", path: "/v1/nodes/join-tokens"}.do(t, s)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), created.JoinToken.ID) || strings.Contains(rec.Body.String(), "hash") {
		t.Fatalf("list join tokens: %d %s", rec.Code, rec.Body)
	}
	wantError(t, req{method: "GET", path: "/v1/nodes/n1"}.do(t, s), 404, "not_found")
	rec = req{method: "GET", path: "/v1/nodes"}.do(t, s)
	if rec.Code != http.StatusOK || rec.Body.String() != `{"items":[]}` {
		t.Fatalf("list nodes: %d %s", rec.Code, rec.Body)
	}
	op := map[string]string{"Authorization": "Bearer " + tokenFor(security.RoleOperator)}
	wantError(t, req{method: "POST", path: "/v1/nodes/join-tokens", body: `{}`, header: op}.do(t, s), 403, "forbidden")
	wantError(t, req{method: "GET", path: "/v1/nodes/join-tokens", header: op}.do(t, s), 403, "forbidden")
	wantError(t, req{method: "POST", path: "/v1/nodes/join-tokens", body: `{"ttl":"1h","extra":1}`}.do(t, s), 400, "unknown_field")

	if rec := (req{method: "DELETE", path: "/v1/nodes/join-tokens/" + created.JoinToken.ID}).do(t, s); rec.Code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
	}
	wantError(t, req{method: "DELETE", path: "/v1/nodes/join-tokens/" + created.JoinToken.ID}.do(t, s), 404, "not_found")
}

// agentServer serves NewAgentAPI over TLS with a certificate of the fake CA
// for 127.0.0.1, as otherix-api does.
func agentServer(t *testing.T, cp *fakeCP, log *slog.Logger) *httptest.Server {
	t.Helper()
	cert, err := cp.ca.IssueServerCert([]string{"127.0.0.1", "localhost"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(NewAgentAPI(cp, log))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: cp.ca.Pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// TestAgentEnrollment drives the real agent client against the agent API.
func TestAgentEnrollment(t *testing.T) {
	cp := newFakeCP()
	logs := &logBuffer{}
	srv := agentServer(t, cp, slog.New(slog.NewJSONHandler(logs, nil)))
	ctx := context.Background()
	mint := func(name string) string {
		tok, err := cp.CreateJoinToken(ctx, principalFor(security.RoleAdmin), messages.CreateJoinTokenRequest{NodeName: name})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	tok := mint("")
	dir := t.TempDir()
	res, err := enroll.Bootstrap(ctx, enroll.Options{Server: srv.URL, Token: tok, Name: "n1", StateDir: dir})
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	n, err := cp.GetNode(ctx, "n1")
	if err != nil || n.CertFingerprint != res.CertFingerprint || n.Phase != messages.NodePending {
		t.Fatalf("node %+v %v; result %+v", n, err, res)
	}
	if cp.lastSource != "127.0.0.1" {
		t.Errorf("source %q", cp.lastSource)
	}
	if fi, err := os.Stat(filepath.Join(dir, "node-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("node key: %v %v", fi, err)
	}

	_, err = enroll.Bootstrap(ctx, enroll.Options{Server: srv.URL, Token: tok, Name: "n2", StateDir: t.TempDir()})
	if !errors.Is(err, &enroll.ServerError{Code: enroll.CodeInvalidJoinToken}) {
		t.Fatalf("reused token: %v", err)
	}
	_, err = enroll.Bootstrap(ctx, enroll.Options{Server: srv.URL, Token: mint("n9"), Name: "n3", StateDir: t.TempDir()})
	if !errors.Is(err, &enroll.ServerError{Code: enroll.CodeNodeNameNotAllowed}) {
		t.Fatalf("bound token: %v", err)
	}
	_, err = enroll.Bootstrap(ctx, enroll.Options{Server: srv.URL, Token: mint(""), Name: "n1", StateDir: t.TempDir()})
	if !errors.Is(err, &enroll.ServerError{Code: enroll.CodeNodeNameConflict}) {
		t.Fatalf("taken name: %v", err)
	}
	if strings.Contains(logs.String(), tok) || !strings.Contains(logs.String(), "enrollment refused") {
		t.Errorf("logs:\n%s", logs)
	}
}

// TestAgentAPIEnvelope: strict decoding, the body limit, unknown routes and
// panics all answer the error envelope on the agent listener.
func TestAgentAPIEnvelope(t *testing.T) {
	cp := newFakeCP()
	srv := agentServer(t, cp, nil)
	c := srv.Client()
	post := func(body, ct string) (*http.Response, apierror.Detail) {
		t.Helper()
		resp, err := c.Post(srv.URL+"/v1/enroll", ct, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var env apierror.Body
		_ = json.NewDecoder(resp.Body).Decode(&env)
		return resp, env.Error
	}
	check := func(resp *http.Response, e apierror.Detail, status int, code string) {
		t.Helper()
		if resp.StatusCode != status || e.Code != code || resp.Header.Get(HeaderRequestID) == "" {
			t.Errorf("status %d code %q, want %d %q", resp.StatusCode, e.Code, status, code)
		}
	}
	resp, e := post(`{"token":"x","name":"n1","csr":"","surprise":true}`, "application/json")
	check(resp, e, 400, "unknown_field")
	resp, e = post(`{"token":"x"}`, "text/plain")
	check(resp, e, 415, "unsupported_media_type")
	resp, e = post(`{"token":"`+strings.Repeat("a", AgentMaxBodyBytes)+`"}`, "application/json")
	check(resp, e, 413, "request_too_large")
	resp, e = post(`{"token":"nope","name":"n1","csr":"x"}`, "application/json")
	check(resp, e, 401, "invalid_join_token")
	resp, e = post(`{"token":"x","name":"panic","csr":"x"}`, "application/json")
	check(resp, e, 500, "internal")
	r, err := c.Get(srv.URL + "/v1/nodes")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusNotFound {
		t.Errorf("main API route on the agent listener: %d", r.StatusCode)
	}
}

// TestNodeClientMatchesContract drives the node routes with http/client and
// checks every answer against control-plane.yaml.
func TestNodeClientMatchesContract(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	hc, ct := newContractClient(t, ts.URL)
	c, err := client.New(ts.URL, client.WithHTTPClient(hc), client.WithToken(tokenFor(security.RoleAdmin)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	caPEM, err := c.CAPEM(ctx)
	if err != nil || string(caPEM) != string(cp.CAPEM()) {
		t.Fatalf("ca: %v", err)
	}
	created, err := c.CreateJoinToken(ctx, messages.CreateJoinTokenRequest{TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Enroll(ctx, enrollRequest(t, created.Token, "n1"), "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateJoinToken(ctx, messages.CreateJoinTokenRequest{TTL: "nope"}); client.ErrorCode(err) != "invalid_field" {
		t.Fatalf("bad ttl: %v", err)
	}
	other, err := c.CreateJoinToken(ctx, messages.CreateJoinTokenRequest{NodeName: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	if toks, _, err := c.ListJoinTokens(ctx, client.ListOptions{}); err != nil || len(toks) != 1 || toks[0].ID != other.JoinToken.ID {
		t.Fatalf("list tokens: %+v %v", toks, err)
	}
	if err := c.RevokeJoinToken(ctx, other.JoinToken.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.RevokeJoinToken(ctx, other.JoinToken.ID); client.ErrorCode(err) != "not_found" {
		t.Fatalf("revoke twice: %v", err)
	}
	nodes, _, err := c.ListNodes(ctx, client.ListOptions{Limit: 5})
	if err != nil || len(nodes) != 1 || nodes[0].Name != "n1" {
		t.Fatalf("nodes: %+v %v", nodes, err)
	}
	if n, err := c.GetNode(ctx, "n1"); err != nil || n.Phase != messages.NodePending {
		t.Fatalf("node: %+v %v", n, err)
	}
	if _, err := c.GetNode(ctx, "nope"); client.ErrorCode(err) != "not_found" {
		t.Fatalf("missing node: %v", err)
	}
	if len(ct.seen) < 8 {
		t.Errorf("only %d pairs checked: %v", len(ct.seen), ct.seen)
	}
}

// enrollRequest builds what otherix-agent bootstrap sends.
func enrollRequest(t *testing.T, token, name string) messages.EnrollRequest {
	t.Helper()
	_, csr, err := security.NewNodeKeyAndCSR(name)
	if err != nil {
		t.Fatal(err)
	}
	return messages.EnrollRequest{Token: token, Name: name, Arch: "amd64",
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}
}

// The contract check decodes the CA's PEM answer as the string it is.
func init() {
	openapi3filter.RegisterBodyDecoder(pemContentType,
		func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
			b, err := io.ReadAll(body)
			return string(b), err
		})
}
