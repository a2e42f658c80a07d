package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "api:8443", "ftp://api", "http://"} {
		if _, err := New(u); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func TestAPIErrorDecoding(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "rid-1")
		switch r.URL.Path {
		case "/v1/vms/dup":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(409)
			_, _ = w.Write([]byte(`{"error":{"code":"vm_name_conflict","message":"taken","details":{"field":"name"}}}`))
		default:
			w.WriteHeader(502)
			_, _ = w.Write([]byte("<html>bad gateway</html>"))
		}
	}))
	defer ts.Close()
	c, err := New(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetVM(t.Context(), "dup")
	var e *APIError
	if !errors.As(err, &e) || e.Status != 409 || e.Code != "vm_name_conflict" || e.Message != "taken" ||
		e.Details["field"] != "name" || e.RequestID != "rid-1" || ErrorCode(err) != "vm_name_conflict" {
		t.Fatalf("envelope decoded as %+v", e)
	}
	_, err = c.GetVM(t.Context(), "other")
	if !errors.As(err, &e) || e.Status != 502 || e.Code != "http_bad_gateway" || e.Message != "<html>bad gateway</html>" {
		t.Fatalf("foreign error decoded as %+v", e)
	}
}

func TestRequestHeaders(t *testing.T) {
	var got http.Header
	var path, query string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, path, query = r.Header.Clone(), r.URL.EscapedPath(), r.URL.RawQuery
		w.Header().Set("Location", "/v1/tasks/t1")
		w.Header().Set("Idempotent-Replayed", "true")
		w.WriteHeader(202)
		_, _ = w.Write([]byte(`{"task":{"id":"t1","state":"pending"}}`))
	}))
	defer ts.Close()
	c, _ := New(ts.URL, WithToken("otx_abc"))
	a, err := c.CreateVM(t.Context(), messages.CreateVMRequest{Name: "a"}, WithIdempotencyKey("k1"), WithRequestID("r1"))
	if err != nil || a.Task.ID != "t1" || a.Location != "/v1/tasks/t1" || !a.Replayed {
		t.Fatalf("create: %+v %v", a, err)
	}
	if got.Get("Idempotency-Key") != "k1" || got.Get("Authorization") != "Bearer otx_abc" ||
		got.Get("Content-Type") != "application/json" || got.Get("X-Request-Id") != "r1" {
		t.Errorf("headers sent: %v", got)
	}
	if _, err := c.DeleteVM(t.Context(), "a b", true); err != nil || path != "/v1/vms/a%20b" || query != "force=true" {
		t.Errorf("delete sent %s?%s (%v)", path, query, err)
	}
}

func TestWaitTaskPollsUntilTerminal(t *testing.T) {
	var polls atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") == "" {
			t.Errorf("poll without wait: %s", r.URL)
		}
		state := messages.TaskRunning
		if polls.Add(1) == 3 {
			state = messages.TaskSuccess
		}
		_ = json.NewEncoder(w).Encode(messages.Task{ID: "t1", State: state})
	}))
	defer ts.Close()
	c, _ := New(ts.URL)
	task, err := c.WaitTask(t.Context(), "t1", time.Second)
	if err != nil || task.State != messages.TaskSuccess || polls.Load() != 3 {
		t.Fatalf("wait: %+v %v after %d polls", task, err, polls.Load())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	polls.Store(-100)
	if _, err := c.WaitTask(ctx, "t1", time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past deadline: %v", err)
	}
}

// TestWaitTaskSlowAnswerKeepsAState: a server whose answers take longer
// than pollMargin to come back (a busy machine, a long round trip) must not
// leave a caller with a deadline empty-handed. The first poll used to end
// pollMargin before the deadline, so its answer arrived after it and
// WaitTask returned no state at all (TestResponsesMatchContract and
// TestE2ETaskLongPoll failed that way under load with GOMAXPROCS=1).
func TestWaitTaskSlowAnswerKeepsAState(t *testing.T) {
	const lag = 300 * time.Millisecond
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
		if err != nil {
			t.Errorf("poll without a valid wait: %s", r.URL)
		}
		// The long poll runs its window out, then the answer is slow.
		select {
		case <-time.After(wait + lag):
		case <-r.Context().Done():
			return
		}
		_ = json.NewEncoder(w).Encode(messages.Task{ID: "t1", State: messages.TaskPending})
	}))
	defer ts.Close()
	c, _ := New(ts.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	last, err := c.WaitTask(ctx, "t1", 10*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) || last == nil || last.State != messages.TaskPending {
		t.Fatalf("wait with a deadline: %+v %v, want the pending state and the deadline", last, err)
	}
}
