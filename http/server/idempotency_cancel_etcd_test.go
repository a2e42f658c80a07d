//go:build etcd

package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/client"
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
