//go:build etcd

package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/persistence/store"
)

// TestReplaceExpiredIdempotencyOnce has many retries find the same expired
// record at once; exactly one may replace it, the rest must see its
// reservation rather than each running the request.
func TestReplaceExpiredIdempotencyOnce(t *testing.T) {
	clock := newClock()
	s := startStore(t, store.WithClock(clock.Now))
	ctx := context.Background()
	scope := "alice POST /v1/vms"
	if _, ok, err := s.ReserveIdempotency(ctx, scope, "k", "h", time.Minute); err != nil || !ok {
		t.Fatalf("reserve: %v %v", ok, err)
	}
	if err := s.CompleteIdempotency(ctx, scope, "k", store.IdempotencyRecord{RequestHash: "h", Status: 202, CreatedAt: clock.Now()}); err != nil {
		t.Fatal(err)
	}
	clock.Add(25 * time.Hour)
	expired, ok, err := s.ReserveIdempotency(ctx, scope, "k", "h", time.Minute)
	if err != nil || ok || expired == nil || !expired.Done {
		t.Fatalf("expected the old done record, got %+v %v %v", expired, ok, err)
	}

	const racers = 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur, ok, err := s.ReplaceIdempotency(ctx, scope, "k", "h", expired)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if ok {
				won++
			} else if cur == nil || cur.Done {
				t.Errorf("loser saw %+v, want the winner's fresh reservation", cur)
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d retries replaced the expired record, want exactly 1", won)
	}
}
