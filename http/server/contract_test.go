package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/otherix/otherix/api/openapi"
	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// loadContract parses and validates api/openapi/control-plane.yaml.
func loadContract(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(openapi.ControlPlane)
	if err != nil {
		t.Fatalf("load control-plane.yaml: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("control-plane.yaml is not valid OpenAPI: %v", err)
	}
	return doc
}

var ginParam = regexp.MustCompile(`:([A-Za-z_]+)`)

// TestRoutesMatchContract fails when a route has no operation in the
// contract or an operation has no route: a new endpoint is not done until
// it is described.
func TestRoutesMatchContract(t *testing.T) {
	doc := loadContract(t)
	var inSpec []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			inSpec = append(inSpec, method+" "+path)
		}
	}
	s, _, _ := newTestServer(t, Config{MetricsEnabled: true})
	var served []string
	for _, r := range s.Routes() {
		// The browser console's and dashboard's pages and bundle (ui.go)
		// are not part of the REST API the contract describes: HTML and
		// scripts for a browser, no JSON, nothing a client of the API calls.
		if r.Path == "/ui" || strings.HasPrefix(r.Path, "/ui/") {
			continue
		}
		served = append(served, r.Method+" "+ginParam.ReplaceAllString(r.Path, "{$1}"))
	}
	slices.Sort(inSpec)
	slices.Sort(served)
	for _, op := range served {
		if !slices.Contains(inSpec, op) {
			t.Errorf("route %s is not in control-plane.yaml", op)
		}
	}
	for _, op := range inSpec {
		if !slices.Contains(served, op) {
			t.Errorf("control-plane.yaml describes %s, which the server does not route", op)
		}
	}
	if len(served) < 14 {
		t.Errorf("only %d routes: %v", len(served), served)
	}
}

// contractTransport checks every response that passes through it against
// control-plane.yaml, so tests driving the API with http/client check the
// contract as a side effect.
type contractTransport struct {
	t      *testing.T
	router routers.Router
	base   http.RoundTripper
	mu     sync.Mutex
	seen   map[string]bool // "METHOD /path/template STATUS" checked
}

// newContractClient returns an HTTP client for baseURL whose responses are
// validated against the contract.
func newContractClient(t *testing.T, baseURL string) (*http.Client, *contractTransport) {
	t.Helper()
	doc := loadContract(t)
	doc.Servers = openapi3.Servers{{URL: baseURL}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("contract router: %v", err)
	}
	ct := &contractTransport{t: t, router: router, base: http.DefaultTransport, seen: map[string]bool{}}
	return &http.Client{Transport: ct}, ct
}

func (v *contractTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := v.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return resp, nil
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		v.t.Errorf("contract: %s %s has no operation: %v", req.Method, req.URL.Path, err)
		return resp, nil
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  resp.StatusCode,
		Header:  resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		v.t.Errorf("contract: %s %s → %d does not match control-plane.yaml: %v\nbody: %s",
			req.Method, req.URL.Path, resp.StatusCode, err, body)
	}
	v.mu.Lock()
	v.seen[req.Method+" "+route.Path+" "+strconv.Itoa(resp.StatusCode)] = true
	v.mu.Unlock()
	return resp, nil
}

// TestResponsesMatchContract drives the server (over a fake control plane)
// with http/client and checks each answer's shape against the contract.
func TestResponsesMatchContract(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{MetricsEnabled: true})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	hc, ct := newContractClient(t, ts.URL)
	c, err := client.New(ts.URL, client.WithHTTPClient(hc), client.WithToken(tokenFor(security.RoleAdmin)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	create := messages.CreateVMRequest{Name: "web-1", Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example/debian.qcow2"}}}
	a, err := c.CreateVM(ctx, create, client.WithIdempotencyKey("k-1"))
	if err != nil || a.Location != "/v1/tasks/"+a.Task.ID || a.VM.Name != "web-1" || a.Replayed {
		t.Fatalf("create: %+v %v", a, err)
	}
	again, err := c.CreateVM(ctx, create, client.WithIdempotencyKey("k-1"))
	if err != nil || !again.Replayed || again.Task.ID != a.Task.ID {
		t.Fatalf("replay: %+v %v", again, err)
	}
	if _, err = c.CreateVM(ctx, messages.CreateVMRequest{Name: "Bad!"}); client.ErrorCode(err) != "invalid_field" {
		t.Fatalf("bad name: %v", err)
	}
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 400 || apiErr.Details["field"] != "name" || apiErr.RequestID == "" {
		t.Fatalf("APIError = %+v", apiErr)
	}
	if _, err := c.GetVM(ctx, "web-1"); err != nil {
		t.Fatal(err)
	}
	two := 2
	if _, err := c.UpdateVM(ctx, "web-1", messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &two}}, client.WithIfMatch(7)); err != nil {
		t.Fatal(err)
	}
	if cp.lastUpd.Revision != 7 {
		t.Errorf("If-Match revision = %d", cp.lastUpd.Revision)
	}
	if _, _, err := c.ListVMs(ctx, client.ListOptions{Limit: 10}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() (*client.Accepted, error){
		func() (*client.Accepted, error) { return c.StartVM(ctx, "web-1") },
		func() (*client.Accepted, error) { return c.StopVM(ctx, "web-1") },
		func() (*client.Accepted, error) { return c.DeleteVM(ctx, "web-1", true) },
	} {
		if a, err := f(); err != nil || a.Task == nil {
			t.Fatalf("vm task: %+v %v", a, err)
		}
	}
	if _, _, err := c.ListTasks(ctx, client.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	id := messages.NewID()
	if task, err := c.GetTask(ctx, id); err != nil || task.ID != id {
		t.Fatalf("get task: %v", err)
	}
	// Long enough that the first poll's answer is back before the deadline
	// on a busy machine: WaitTask gives it half the window.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	last, err := c.WaitTask(wctx, id, time.Second)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || last == nil || last.State != messages.TaskPending {
		t.Fatalf("wait: %+v %v", last, err)
	}
	if task, err := c.CancelTask(ctx, id); err != nil || task.State != messages.TaskCancelled {
		t.Fatalf("cancel: %+v %v", task, err)
	}
	if err := c.Healthz(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Readyz(ctx); err != nil {
		t.Fatal(err)
	}
	cp.err = messages.NameConflict("vms", "name", "web-1")
	if _, err := c.CreateVM(ctx, create); client.ErrorCode(err) != "vm_name_conflict" {
		t.Fatalf("conflict: %v", err)
	}
	cp.err = fmt.Errorf("commit vm: %w", rpctypes.ErrNoSpace)
	if _, err := c.CreateVM(ctx, create); client.ErrorCode(err) != "storage_full" {
		t.Fatalf("full store: %v", err)
	}
	cp.err = errLeaky
	if _, err := c.GetVM(ctx, "web-1"); client.ErrorCode(err) != "internal" {
		t.Fatalf("internal: %v", err)
	}
	for _, path := range []string{"/metrics", "/openapi.yaml", "/v1/vms?limit=0"} {
		resp, err := hc.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// A replay of any stored answer, not only a 202, carries
	// Idempotent-Replayed; the transport checks it against the contract.
	cp.err = nil
	replayed := func(method, path, body string) (int, string) {
		t.Helper()
		var status int
		var marks []string
		for range 2 {
			req, err := http.NewRequestWithContext(ctx, method, ts.URL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(HeaderIdempotencyKey, "replay "+method+" "+path)
			withToken(req, security.RoleAdmin)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			status = resp.StatusCode
			marks = append(marks, resp.Header.Get(HeaderIdempotentReplayed))
		}
		return status, strings.Join(marks, ",")
	}
	if st, marks := replayed(http.MethodPatch, "/v1/vms/web-1", `{"spec":{"cpus":2}}`); st != http.StatusOK || marks != ",true" {
		t.Errorf("PATCH replay: %d %q", st, marks)
	}
	cp.err = messages.NameConflict("vms", "name", "web-2")
	if st, marks := replayed(http.MethodPost, "/v1/vms", `{"name":"web-2","spec":{"image":{"url":"https://images.example/debian.qcow2"}}}`); st != http.StatusConflict || marks != ",true" {
		t.Errorf("409 replay: %d %q", st, marks)
	}
	cp.err = nil
	if len(ct.seen) < 15 {
		t.Errorf("only %d (operation, status) pairs checked: %v", len(ct.seen), ct.seen)
	}
}

// TestWritesDeclareReplayHeader: every answer of a write can be a replay, so
// every response of a POST, PATCH or DELETE declares Idempotent-Replayed.
func TestWritesDeclareReplayHeader(t *testing.T) {
	doc := loadContract(t)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if method != http.MethodPost && method != http.MethodPatch && method != http.MethodDelete {
				continue
			}
			for status, ref := range op.Responses.Map() {
				if ref.Value == nil || ref.Value.Headers[HeaderIdempotentReplayed] == nil {
					t.Errorf("%s %s → %s does not declare %s", method, path, status, HeaderIdempotentReplayed)
				}
			}
		}
	}
}
