package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/internal/requestid"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

const createBody = `{"name":"web-1","spec":{"image":{"url":"https://images.example/debian.qcow2"}}}`

type req struct {
	method, path, body string
	header             map[string]string
}

func (r req) do(t *testing.T, s *Server) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr := httptest.NewRequest(r.method, r.path, body)
	if r.body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	// Every request is an admin's unless the test says otherwise (an empty
	// Authorization header value sends none).
	withToken(hr, security.RoleAdmin)
	for k, v := range r.header {
		if v == "" {
			hr.Header.Del(k)
			continue
		}
		hr.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, hr)
	return rec
}

func envelope(t *testing.T, rec *httptest.ResponseRecorder) apierror.Detail {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("content type %q, want application/json; body %s", ct, rec.Body)
	}
	var b struct {
		Error *apierror.Detail `json:"error"`
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil || b.Error == nil {
		t.Fatalf("body is not an error envelope (%v): %s", err, rec.Body)
	}
	if b.Error.Code == "" || b.Error.Message == "" || b.Error.Details == nil {
		t.Fatalf("envelope lacks code, message or details: %+v", b.Error)
	}
	return *b.Error
}

func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) apierror.Detail {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	e := envelope(t, rec)
	if e.Code != code {
		t.Fatalf("code %q, want %q (%s)", e.Code, code, e.Message)
	}
	return e
}

func TestBadBodies(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{MaxBodyBytes: 256})
	big := `{"name":"web-1","spec":{"image":{"url":"https://images.example/debian.qcow2"},"user_data":"` +
		strings.Repeat("x", 300) + `"}}`
	tests := []struct {
		name   string
		r      req
		status int
		code   string
		field  string
	}{
		{"malformed", req{method: "POST", path: "/v1/vms", body: `{"name":`}, 400, "invalid_json", ""},
		{"syntax", req{method: "POST", path: "/v1/vms", body: `{"name" "x"}`}, 400, "invalid_json", ""},
		{"empty", req{method: "POST", path: "/v1/vms", header: map[string]string{"Content-Type": "application/json"}}, 400, "invalid_json", ""},
		{"trailing", req{method: "POST", path: "/v1/vms", body: createBody + ` {}`}, 400, "invalid_json", ""},
		{"not an object", req{method: "POST", path: "/v1/vms", body: `[1,2]`}, 400, "invalid_json", ""},
		{"unknown field", req{method: "POST", path: "/v1/vms", body: `{"name":"a","bogus":1}`}, 400, "unknown_field", "bogus"},
		{"nested unknown field", req{method: "POST", path: "/v1/vms", body: `{"name":"a","spec":{"cpu":2}}`}, 400, "unknown_field", "cpu"},
		{"wrong type", req{method: "POST", path: "/v1/vms", body: `{"name":"a","spec":{"cpus":"two"}}`}, 400, "invalid_field", "spec.cpus"},
		{"wrong type in patch", req{method: "PATCH", path: "/v1/vms/a", body: `{"spec":{"memory_mib":true}}`}, 400, "invalid_field", "spec.memory_mib"},
		{"too large", req{method: "POST", path: "/v1/vms", body: big}, 413, "request_too_large", ""},
		{"no content type", req{method: "POST", path: "/v1/vms", body: createBody, header: map[string]string{"Content-Type": ""}}, 415, "unsupported_media_type", ""},
		{"form content type", req{method: "POST", path: "/v1/vms", body: createBody, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type", ""},
		{"invalid name", req{method: "POST", path: "/v1/vms", body: `{"name":"Web_1","spec":{}}`}, 400, "invalid_field", "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := wantError(t, tt.r.do(t, s), tt.status, tt.code)
			if tt.field != "" && e.Details["field"] != tt.field {
				t.Errorf("details.field = %v, want %q (%s)", e.Details["field"], tt.field, e.Message)
			}
		})
	}
	if cp.creates != 0 {
		t.Errorf("%d VMs created from bad bodies", cp.creates)
	}
}

func TestChunkedBodyOverLimit(t *testing.T) {
	s, _, _ := newTestServer(t, Config{MaxBodyBytes: 64})
	hr := httptest.NewRequest("POST", "/v1/vms", strings.NewReader(createBody+strings.Repeat(" ", 100)))
	hr.ContentLength = -1 // as if sent chunked: the limit must hold while reading
	hr.Header.Set("Content-Type", "application/json")
	withToken(hr, security.RoleAdmin)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, hr)
	wantError(t, rec, 413, "request_too_large")

	// The same through the idempotency middleware, which reads the body first.
	hr = httptest.NewRequest("POST", "/v1/vms", strings.NewReader(createBody+strings.Repeat(" ", 100)))
	hr.ContentLength = -1
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set(HeaderIdempotencyKey, "k1")
	withToken(hr, security.RoleAdmin)
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, hr)
	wantError(t, rec, 413, "request_too_large")
}

func TestRequestID(t *testing.T) {
	s, _, logs := newTestServer(t, Config{})
	rec := req{method: "GET", path: "/healthz", header: map[string]string{HeaderRequestID: "trace-1.A_b"}}.do(t, s)
	if got := rec.Header().Get(HeaderRequestID); got != "trace-1.A_b" {
		t.Errorf("sane request id not echoed: %q", got)
	}
	for _, bad := range []string{"has space", strings.Repeat("a", 65), "semi;colon"} {
		rec := req{method: "GET", path: "/healthz", header: map[string]string{HeaderRequestID: bad}}.do(t, s)
		got := rec.Header().Get(HeaderRequestID)
		if got == bad || !requestid.Sane(got) {
			t.Errorf("request id %q answered with %q, want a generated one", bad, got)
		}
	}
	rec = req{method: "GET", path: "/healthz"}.do(t, s)
	if id := rec.Header().Get(HeaderRequestID); len(id) != 32 {
		t.Errorf("generated request id %q", id)
	}
	if !strings.Contains(logs.String(), `"request_id":"trace-1.A_b"`) || !strings.Contains(logs.String(), `"route":"/healthz"`) {
		t.Errorf("access log lacks request id or route:\n%s", logs)
	}
}

func TestErrorTable(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{messages.NotFound("vm", "web-1"), 404, "not_found"},
		{messages.NameConflict("vms", "name", "web-1"), 409, "vm_name_conflict"},
		{&messages.Error{Kind: messages.KindStale, Code: "stale", Message: "changed"}, 409, "revision_conflict"},
		{messages.ErrTaskNotPending, 409, "task_not_cancellable"},
		{messages.ErrUnavailable, 503, "unavailable"},
		{messages.Errorf(messages.KindUnprocessable, "nope", "no"), 422, "nope"},
		{messages.Errorf(messages.KindTooLarge, "too_big", "big"), 413, "too_big"},
		{messages.Invalid("spec.cpus", "bad"), 400, "invalid_field"},
		{store.ErrBadCursor, 400, "invalid_cursor"},
		{fmt.Errorf("get vm: %w", errLeaky), 500, "internal"},
		{&messages.Error{Kind: messages.KindInternal, Code: "oops", Message: "leaky detail", Err: errLeaky}, 500, "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			s, cp, logs := newTestServer(t, Config{})
			cp.err = tt.err
			rec := req{method: "GET", path: "/v1/vms/web-1"}.do(t, s)
			e := wantError(t, rec, tt.status, tt.code)
			if tt.status == 500 {
				if strings.Contains(rec.Body.String(), "secret") || strings.Contains(rec.Body.String(), "leaky") {
					t.Errorf("internal error leaked: %s", rec.Body)
				}
				if !strings.Contains(logs.String(), "secret-internal-detail") {
					t.Errorf("internal error not logged:\n%s", logs)
				}
			}
			if e.Message == "" {
				t.Error("empty message")
			}
		})
	}
}

func TestPanicRecovery(t *testing.T) {
	s, _, logs := newTestServer(t, Config{MetricsEnabled: true})
	rec := req{method: "POST", path: "/v1/vms", body: `{"name":"panic","spec":{}}`}.do(t, s)
	wantError(t, rec, 500, "internal")
	if rec.Header().Get(HeaderRequestID) == "" {
		t.Error("no request id on a panicked request")
	}
	if !strings.Contains(logs.String(), "handler panicked") || !strings.Contains(logs.String(), "boom") {
		t.Errorf("panic not logged:\n%s", logs)
	}
	// The server still serves.
	if rec := (req{method: "GET", path: "/healthz"}).do(t, s); rec.Code != 200 {
		t.Errorf("healthz after panic: %d", rec.Code)
	}
	m := req{method: "GET", path: "/metrics"}.do(t, s).Body.String()
	if !strings.Contains(m, `otherix_http_requests_total{method="POST",route="/v1/vms",status="500"} 1`) {
		t.Errorf("panic not counted as a 500:\n%s", m)
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	wantError(t, req{method: "GET", path: "/v1/nope"}.do(t, s), 404, "route_not_found")
	wantError(t, req{method: "GET", path: "/v1/vms/"}.do(t, s), 404, "route_not_found")
	rec := req{method: "PUT", path: "/v1/vms"}.do(t, s)
	wantError(t, rec, 405, "method_not_allowed")
	if allow := rec.Header().Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Errorf("Allow = %q", allow)
	}
}

func TestIdempotency(t *testing.T) {
	key := map[string]string{HeaderIdempotencyKey: "create-web-1"}
	t.Run("replay", func(t *testing.T) {
		s, cp, _ := newTestServer(t, Config{})
		first := req{method: "POST", path: "/v1/vms", body: createBody, header: key}.do(t, s)
		if first.Code != 202 || first.Header().Get("Location") == "" {
			t.Fatalf("first: %d %s", first.Code, first.Body)
		}
		second := req{method: "POST", path: "/v1/vms", body: createBody, header: key}.do(t, s)
		if second.Code != 202 || second.Body.String() != first.Body.String() ||
			second.Header().Get("Location") != first.Header().Get("Location") ||
			second.Header().Get(HeaderIdempotentReplayed) != "true" ||
			!strings.HasPrefix(second.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("replay differs: %d %v %s", second.Code, second.Header(), second.Body)
		}
		if first.Header().Get(HeaderIdempotentReplayed) != "" {
			t.Error("first answer marked as replayed")
		}
		if cp.creates != 1 {
			t.Errorf("%d creates, want 1", cp.creates)
		}
	})
	t.Run("different body", func(t *testing.T) {
		s, cp, _ := newTestServer(t, Config{})
		req{method: "POST", path: "/v1/vms", body: createBody, header: key}.do(t, s)
		other := strings.Replace(createBody, "web-1", "web-2", 1)
		wantError(t, req{method: "POST", path: "/v1/vms", body: other, header: key}.do(t, s), 422, "idempotency_key_reused")
		if cp.creates != 1 {
			t.Errorf("%d creates, want 1", cp.creates)
		}
	})
	t.Run("different query", func(t *testing.T) {
		s, _, _ := newTestServer(t, Config{})
		req{method: "DELETE", path: "/v1/vms/web-1", header: key}.do(t, s)
		wantError(t, req{method: "DELETE", path: "/v1/vms/web-1?force=true", header: key}.do(t, s), 422, "idempotency_key_reused")
	})
	t.Run("in progress", func(t *testing.T) {
		s, cp, _ := newTestServer(t, Config{})
		// Another replica holds the key with this very request.
		hr := httptest.NewRequest("POST", "/v1/vms", strings.NewReader(createBody))
		scope := principalFor(security.RoleAdmin).UserID + " POST /v1/vms"
		if h, _, _ := cp.idem.ReserveIdempotency(t.Context(), scope, key[HeaderIdempotencyKey], requestHash(hr, []byte(createBody)), time.Hour); h == nil {
			t.Fatal("pre-reserve failed")
		}
		wantError(t, req{method: "POST", path: "/v1/vms", body: createBody, header: key}.do(t, s), 409, "idempotency_in_progress")
		if cp.creates != 0 {
			t.Errorf("%d creates, want 0", cp.creates)
		}
	})
	t.Run("5xx releases the key", func(t *testing.T) {
		s, cp, _ := newTestServer(t, Config{})
		cp.err = messages.ErrUnavailable
		wantError(t, req{method: "POST", path: "/v1/vms", body: createBody, header: key}.do(t, s), 503, "unavailable")
		if n := cp.idem.len(); n != 0 {
			t.Fatalf("%d idempotency records after a 5xx", n)
		}
		cp.err = nil
		if rec := (req{method: "POST", path: "/v1/vms", body: createBody, header: key}).do(t, s); rec.Code != 202 {
			t.Fatalf("retry after 5xx: %d %s", rec.Code, rec.Body)
		}
	})
	t.Run("panic releases the key", func(t *testing.T) {
		s, cp, _ := newTestServer(t, Config{})
		wantError(t, req{method: "POST", path: "/v1/vms", body: `{"name":"panic","spec":{}}`, header: key}.do(t, s), 500, "internal")
		if n := cp.idem.len(); n != 0 {
			t.Fatalf("%d idempotency records after a panic", n)
		}
	})
	t.Run("4xx is remembered", func(t *testing.T) {
		s, cp, _ := newTestServer(t, Config{})
		bad := `{"name":"Bad_Name","spec":{}}`
		wantError(t, req{method: "POST", path: "/v1/vms", body: bad, header: key}.do(t, s), 400, "invalid_field")
		rec := req{method: "POST", path: "/v1/vms", body: bad, header: key}.do(t, s)
		wantError(t, rec, 400, "invalid_field")
		if rec.Header().Get(HeaderIdempotentReplayed) != "true" {
			t.Error("4xx not replayed")
		}
		if cp.creates != 0 {
			t.Errorf("%d creates", cp.creates)
		}
	})
	t.Run("expired record", func(t *testing.T) {
		s, cp, _ := newTestServer(t, Config{IdempotencyTTL: time.Hour})
		req{method: "POST", path: "/v1/vms", body: createBody, header: key}.do(t, s)
		cp.idem.mu.Lock()
		cp.idem.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
		cp.idem.mu.Unlock()
		rec := req{method: "POST", path: "/v1/vms", body: createBody, header: key}.do(t, s)
		if rec.Code != 202 || rec.Header().Get(HeaderIdempotentReplayed) != "" || cp.creates != 2 {
			t.Fatalf("expired key replayed: %d creates=%d %v", rec.Code, cp.creates, rec.Header())
		}
	})
	t.Run("bad keys", func(t *testing.T) {
		s, _, _ := newTestServer(t, Config{})
		for _, k := range []string{strings.Repeat("k", 256), "tab\there", "é"} {
			wantError(t, req{method: "POST", path: "/v1/vms", body: createBody, header: map[string]string{HeaderIdempotencyKey: k}}.do(t, s),
				400, "invalid_idempotency_key")
		}
		hr := httptest.NewRequest("POST", "/v1/vms", strings.NewReader(createBody))
		hr.Header.Set("Content-Type", "application/json")
		hr.Header.Set(HeaderIdempotencyKey, "")
		withToken(hr, security.RoleAdmin)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, hr)
		wantError(t, rec, 400, "invalid_idempotency_key")
	})
	t.Run("concurrent retries run once", func(t *testing.T) {
		s, cp, _ := newTestServer(t, Config{})
		var wg sync.WaitGroup
		codes := make(chan int, 20)
		for range 20 {
			wg.Go(func() {
				codes <- req{method: "POST", path: "/v1/vms", body: createBody, header: key}.do(t, s).Code
			})
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != 202 && c != 409 {
				t.Errorf("status %d", c)
			}
		}
		if cp.creates != 1 {
			t.Errorf("%d creates, want 1", cp.creates)
		}
	})
}

func TestPagination(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	for _, path := range []string{"/v1/vms", "/v1/tasks"} {
		for _, bad := range []string{"0", "201", "-1", "ten"} {
			wantError(t, req{method: "GET", path: path + "?limit=" + bad}.do(t, s), 400, "invalid_limit")
		}
		wantError(t, req{method: "GET", path: path + "?cursor=***"}.do(t, s), 400, "invalid_cursor")
		cursor := store.EncodeCursor("01jabc")
		rec := req{method: "GET", path: path + "?limit=200&cursor=" + cursor}.do(t, s)
		if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"items":[]}` {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		if cp.lastPage != (store.Page{Limit: 200, Cursor: cursor}) {
			t.Errorf("page passed on as %+v", cp.lastPage)
		}
	}
}

func TestTaskWait(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	for _, bad := range []string{"soon", "-1s", "1x"} {
		wantError(t, req{method: "GET", path: "/v1/tasks/t1?wait=" + bad}.do(t, s), 400, "invalid_wait")
	}
	start := time.Now()
	rec := req{method: "GET", path: "/v1/tasks/t1?wait=150ms"}.do(t, s)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"state":"pending"`) {
		t.Fatalf("wait ran out: %d %s", rec.Code, rec.Body)
	}
	if el := time.Since(start); el < 150*time.Millisecond || el > 5*time.Second {
		t.Errorf("long poll took %v", el)
	}
	if d, _ := waitOf(ginContextWithQuery("wait=5m")); d != MaxTaskWait {
		t.Errorf("wait not capped: %v", d)
	}
}

func TestVMWrites(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	rec := req{method: "PATCH", path: "/v1/vms/web-1", body: `{"spec":{"cpus":2}}`, header: map[string]string{"If-Match": `"42"`}}.do(t, s)
	if rec.Code != 200 || cp.lastUpd.Revision != 42 || *cp.lastUpd.Spec.CPUs != 2 || rec.Header().Get("ETag") != `"7"` {
		t.Fatalf("patch: %d %+v %s", rec.Code, cp.lastUpd, rec.Body)
	}
	wantError(t, req{method: "PATCH", path: "/v1/vms/web-1", body: `{"spec":{},"revision":3}`, header: map[string]string{"If-Match": "42"}}.do(t, s), 400, "invalid_field")
	wantError(t, req{method: "PATCH", path: "/v1/vms/web-1", body: `{"spec":{}}`, header: map[string]string{"If-Match": "*"}}.do(t, s), 400, "invalid_if_match")

	for path, kind := range map[string]string{"/v1/vms/web-1/start": messages.TaskVMStart, "/v1/vms/web-1/stop": messages.TaskVMStop,
		"/v1/vms/web-1?force=true": messages.TaskVMDelete} {
		method := "POST"
		if kind == messages.TaskVMDelete {
			method = "DELETE"
		}
		rec := req{method: method, path: path}.do(t, s)
		var body accepted
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 202 || body.Task == nil ||
			rec.Header().Get("Location") != "/v1/tasks/"+body.Task.ID || cp.lastKind != kind {
			t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
		}
		if cp.lastForc != (kind == messages.TaskVMDelete) {
			t.Errorf("%s %s: force = %v", method, path, cp.lastForc)
		}
	}
	wantError(t, req{method: "DELETE", path: "/v1/vms/web-1?force=maybe"}.do(t, s), 400, "invalid_force")
}

func TestHealthAndContract(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	if rec := (req{method: "GET", path: "/healthz"}).do(t, s); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"ok"`) {
		t.Errorf("healthz: %d %s", rec.Code, rec.Body)
	}
	if rec := (req{method: "GET", path: "/readyz"}).do(t, s); rec.Code != 200 {
		t.Errorf("readyz: %d %s", rec.Code, rec.Body)
	}
	cp.readyErr = errLeaky
	rec := req{method: "GET", path: "/readyz"}.do(t, s)
	wantError(t, rec, 503, "not_ready")
	if strings.Contains(rec.Body.String(), "secret") {
		t.Errorf("readyz leaked its cause: %s", rec.Body)
	}
	rec = req{method: "GET", path: "/openapi.yaml"}.do(t, s)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/yaml" || !strings.HasPrefix(rec.Body.String(), "openapi: 3.0.3") {
		t.Errorf("openapi.yaml: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	// Metrics are off unless enabled.
	wantError(t, req{method: "GET", path: "/metrics"}.do(t, s), 404, "route_not_found")
}

func TestMetricsPerServer(t *testing.T) {
	// Two servers in one process must not collide on a registry.
	a, _, _ := newTestServer(t, Config{MetricsEnabled: true})
	b, _, _ := newTestServer(t, Config{MetricsEnabled: true})
	req{method: "GET", path: "/v1/vms/x"}.do(t, a)
	req{method: "GET", path: "/no/such/path"}.do(t, a)
	m := req{method: "GET", path: "/metrics"}.do(t, a).Body.String()
	for _, want := range []string{
		`otherix_http_requests_total{method="GET",route="/v1/vms/:id",status="200"} 1`,
		`otherix_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`otherix_http_request_duration_seconds_bucket{method="GET",route="/v1/vms/:id"`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if m := (req{method: "GET", path: "/metrics"}).do(t, b).Body.String(); strings.Contains(m, `route="/v1/vms/:id"`) {
		t.Error("servers share metrics")
	}
}

// withToken makes hr a request by the fake user of role r.
func withToken(hr *http.Request, r security.Role) {
	hr.Header.Set("Authorization", "Bearer "+tokenFor(r))
}
