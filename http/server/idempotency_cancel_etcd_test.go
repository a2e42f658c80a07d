//go:build etcd

package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// cancelKey carries, in a request's context, the cancel of that context.
type cancelKey struct{}

// cancelDuringReserve is the control plane with one twist: a request whose
// context carries a cancel is cancelled while its Idempotency-Key is being
// reserved, after etcd took the reservation. That is what a replica
// shutting down does (it cancels every request's context) when the
// reservation's transaction is already in Raft.
type cancelDuringReserve struct{ *gateway.Gateway }

func (c cancelDuringReserve) ReserveIdempotency(ctx context.Context, scope, key, hash string, stale time.Duration) (*store.IdempotencyRecord, bool, error) {
	rec, ok, err := c.Gateway.ReserveIdempotency(ctx, scope, key, hash, stale)
	if cancel, set := ctx.Value(cancelKey{}).(context.CancelFunc); set {
		cancel()
	}
	if ctx.Err() != nil {
		return nil, false, ctx.Err()
	}
	return rec, ok, err
}

// TestIdempotencyReservationOutlivesCancel: a create cancelled while its
// key was being reserved leaves no reservation behind; the retry with the
// same key gets a 202, not idempotency_in_progress for a minute. Before,
// the reservation was made with the request's context: its error returned
// before the release was deferred, and a rolling restart left keys in
// progress (TestRollingRestartUnderWrites in test/e2e).
func TestIdempotencyReservationOutlivesCancel(t *testing.T) {
	env := startEnv(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h := New(Config{}, cancelDuringReserve{env.gw}, log).Handler()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test-Cancel-Reserve") != "" {
			ctx, cancel := context.WithCancel(r.Context())
			defer cancel()
			r = r.WithContext(context.WithValue(ctx, cancelKey{}, context.CancelFunc(cancel)))
		}
		h.ServeHTTP(w, r)
	}))
	defer ts.Close()
	cl, err := client.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := cl.Login(t.Context(), adminEmail, adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	create := func(cancel bool) (int, string) {
		body, _ := json.Marshal(vmRequest("cancelled"))
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.URL+"/v1/vms", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+pair.AccessToken)
		req.Header.Set(HeaderIdempotencyKey, "create-cancelled")
		if cancel {
			req.Header.Set("X-Test-Cancel-Reserve", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	first, body := create(true)
	t.Logf("the cancelled create answered %d %s", first, body)
	if st, body := create(false); st != http.StatusAccepted {
		t.Fatalf("retry with the same key: %d %s", st, body)
	}
	vms, _, err := env.admin.ListVMs(t.Context(), client.ListOptions{})
	if err != nil || len(vms) != 1 {
		t.Fatalf("%d vms (%v), want 1", len(vms), err)
	}
}

// flakyComplete is the control plane whose first recordings of an
// idempotent answer (as many as failures holds) fail as etcd's do during a
// leader election.
type flakyComplete struct {
	*gateway.Gateway
	failures *atomic.Int32
}

func (f flakyComplete) CompleteIdempotency(ctx context.Context, scope, key string, rec store.IdempotencyRecord) error {
	if f.failures.Add(-1) >= 0 {
		return &messages.Error{Kind: messages.KindUnavailable, Code: "unavailable", Message: "etcd did not answer",
			Err: errors.New("etcdserver: request timed out")}
	}
	return f.Gateway.CompleteIdempotency(ctx, scope, key, rec)
}

// TestIdempotencyAnswerRecordedThroughElection: recording a create's answer
// fails twice (an election); it is retried, so a retry of the create with
// the same key replays the 202 instead of answering idempotency_in_progress
// for a minute. Before, one failed attempt was logged and the key stayed
// reserved: TestRollingRestartUnderWrites (test/e2e) caught it.
func TestIdempotencyAnswerRecordedThroughElection(t *testing.T) {
	env := startEnv(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	failures := &atomic.Int32{}
	failures.Store(2)
	ts := httptest.NewServer(New(Config{}, flakyComplete{env.gw, failures}, log).Handler())
	defer ts.Close()
	anon, err := client.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := anon.Login(t.Context(), adminEmail, adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(ts.URL, client.WithToken(pair.AccessToken))
	if err != nil {
		t.Fatal(err)
	}
	key := client.WithIdempotencyKey("create-election")
	first, err := cl.CreateVM(t.Context(), vmRequest("election"), key)
	if err != nil {
		t.Fatal(err)
	}
	again, err := cl.CreateVM(t.Context(), vmRequest("election"), key)
	if err != nil {
		t.Fatalf("retry with the same key: %v", err)
	}
	if !again.Replayed || again.VM.ID != first.VM.ID || again.Task.ID != first.Task.ID {
		t.Fatalf("retry answered %+v, first %+v", again, first)
	}
}
