//go:build etcd

package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/persistence/store"
)

// killPoint is where replica A "dies" (SIGKILL): nothing of it runs after.
type killPoint int

const (
	// afterReserve: the key is reserved, the handler never runs.
	afterReserve killPoint = iota
	// afterWrite: the handler's write committed, its answer is never
	// recorded.
	afterWrite
)

// killedReplica is replica A: its reservations are its own store's (its
// own lease); at the kill point its lease ends, as the lease of a process
// killed with SIGKILL does once its TTL is out (revoked here, so the
// test need not wait for it; persistence/store's tests wait for a real
// expiry), and no bookkeeping of it runs.
type killedReplica struct {
	*gateway.Gateway
	st *store.Store
	at killPoint
}

// die ends the replica's lease, found in the record it reserved.
func (k killedReplica) die(ctx context.Context, scope, key string) error {
	resp, err := k.st.Client().Get(ctx, store.IdempotencyKey(scope, key))
	if err != nil || len(resp.Kvs) == 0 {
		return fmt.Errorf("read the reservation: %v (%d keys)", err, len(resp.Kvs))
	}
	var rec store.IdempotencyRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return err
	}
	_, err = k.st.Client().Revoke(ctx, clientv3.LeaseID(rec.Lease))
	return err
}

func (k killedReplica) ReserveIdempotency(ctx context.Context, scope, key, hash string, expireAfter time.Duration) (store.Hold, *store.IdempotencyRecord, error) {
	hold, rec, err := k.st.ReserveIdempotencyHold(ctx, scope, key, hash, expireAfter)
	if err != nil || hold == nil {
		return hold, rec, err
	}
	if k.at == afterReserve {
		if err := k.die(ctx, scope, key); err != nil {
			return nil, nil, err
		}
		return nil, nil, errors.New("killed")
	}
	return deadAfterWrite{hold, func() error { return k.die(context.WithoutCancel(ctx), scope, key) }}, nil, nil
}

// deadAfterWrite is a hold whose replica dies once the handler is done:
// the answer is neither recorded nor the key abandoned.
type deadAfterWrite struct {
	store.Hold
	die func() error
}

func (d deadAfterWrite) Complete(context.Context, store.IdempotencyRecord) (bool, error) {
	return true, d.die()
}

func (d deadAfterWrite) Abandon(context.Context) error { return d.die() }

// TestRetryOnSurvivorAfterKill: replica A dies at a kill point while
// serving a create with an Idempotency-Key, and the client retries on
// replica B. Killed after the reservation, the retry runs the create
// (202); killed after the write, the retry does not run it a second time
// but is told its answer was lost, naming the VM and task written. Either
// way the cluster holds one VM. Before, both retries were answered
// idempotency_in_progress for a minute, and then the second one ran the
// create again.
func TestRetryOnSurvivorAfterKill(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   killPoint
	}{{"after reserve", afterReserve}, {"after write", afterWrite}} {
		t.Run(tc.name, func(t *testing.T) {
			env := startEnv(t)
			log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
			// A's reservations are bound to a lease of its own store.
			a := killedReplica{Gateway: env.gw, st: store.New(env.st.Client()), at: tc.at}
			tsA := httptest.NewServer(New(Config{}, a, log).Handler())
			defer tsA.Close()
			token := env.loginPair(adminEmail, adminPassword).AccessToken
			clA, err := client.New(tsA.URL, client.WithToken(token))
			if err != nil {
				t.Fatal(err)
			}
			key := client.WithIdempotencyKey("create-killed")
			first, err := clA.CreateVM(t.Context(), vmRequest("killed"), key)
			t.Logf("the create on A answered %+v %v", first, err)

			var answer *client.Accepted
			var answerErr error
			testutil.EventuallyReport(t, 10*time.Second, 50*time.Millisecond, "the retry on B is answered", func() (bool, string) {
				answer, answerErr = env.admin.CreateVM(t.Context(), vmRequest("killed"), key)
				var apiErr *client.APIError
				if errors.As(answerErr, &apiErr) && apiErr.Code == "idempotency_in_progress" {
					return false, answerErr.Error()
				}
				return true, ""
			})
			vms, _, err := env.admin.ListVMs(t.Context(), client.ListOptions{})
			if err != nil || len(vms) != 1 {
				t.Fatalf("%d vms (%v), want 1", len(vms), err)
			}
			switch tc.at {
			case afterReserve:
				if answerErr != nil || answer.VM.ID != vms[0].ID {
					t.Fatalf("retry = %+v, %v; want a 202 for vm %s", answer, answerErr, vms[0].ID)
				}
			case afterWrite:
				var apiErr *client.APIError
				if !errors.As(answerErr, &apiErr) || apiErr.Status != 409 || apiErr.Code != "idempotency_answer_lost" {
					t.Fatalf("retry = %+v, %v; want 409 idempotency_answer_lost", answer, answerErr)
				}
				written, _ := apiErr.Details["written"].([]any)
				if !slices.Contains(written, any("vms/"+vms[0].ID)) || !slices.Contains(written, any("tasks/"+first.Task.ID)) {
					t.Fatalf("written = %v, want the vm %s and its task %s", apiErr.Details["written"], vms[0].ID, first.Task.ID)
				}
			}
		})
	}
}

// TestLostReservationAnswersUnavailable: a handler whose reservation was
// lost before its write (its replica cut off past its lease, and a retry
// elsewhere took the key over) is refused by the write's own transaction
// with 503 idempotency_reservation_lost, so the client retries; nothing
// was created by it.
func TestLostReservationAnswersUnavailable(t *testing.T) {
	env := startEnv(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ts := httptest.NewServer(New(Config{}, stolenReservation{env.gw, env.st}, log).Handler())
	defer ts.Close()
	cl, err := client.New(ts.URL, client.WithToken(env.loginPair(adminEmail, adminPassword).AccessToken))
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.CreateVM(t.Context(), vmRequest("stolen"), client.WithIdempotencyKey("create-stolen"))
	wantCode(t, err, 503, "idempotency_reservation_lost")
	vms, _, err := env.admin.ListVMs(t.Context(), client.ListOptions{})
	if err != nil || len(vms) != 0 {
		t.Fatalf("%d vms (%v), want 0", len(vms), err)
	}
}

// stolenReservation reserves the key, then loses it as a replica cut off
// past its lease does: the lease ends and another attempt reserves the
// key before the handler writes.
type stolenReservation struct {
	*gateway.Gateway
	st *store.Store
}

func (s stolenReservation) ReserveIdempotency(ctx context.Context, scope, key, hash string, expireAfter time.Duration) (store.Hold, *store.IdempotencyRecord, error) {
	mine := store.New(s.st.Client())
	hold, rec, err := mine.ReserveIdempotencyHold(ctx, scope, key, hash, expireAfter)
	if err != nil || hold == nil {
		return hold, rec, err
	}
	if err := mine.ReleaseIdempotencyLease(ctx); err != nil {
		return nil, nil, err
	}
	if other, _, err := s.st.ReserveIdempotencyHold(ctx, scope, key, hash, expireAfter); err != nil || other == nil {
		return nil, nil, fmt.Errorf("the other attempt did not get the key: %v", err)
	}
	return hold, nil, nil
}
