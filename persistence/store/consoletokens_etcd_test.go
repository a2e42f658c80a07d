//go:build etcd

package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

func consoleRec(vm string, expires time.Time) store.ConsoleTokenRecord {
	return store.ConsoleTokenRecord{Hash: "h-" + vm, User: "alice", Scope: "alice", VM: vm,
		Mode: messages.ConsoleInteractive, ExpiresAt: expires}
}

// TestConsoleTokenSingleUse: a token is consumed once, even by racers; a
// wrong secret leaves it for its holder; another VM's use burns it.
func TestConsoleTokenSingleUse(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	exp := time.Now().Add(time.Minute)
	if err := s.PutConsoleToken(ctx, "tok1", consoleRec("vm1", exp), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.PutConsoleToken(ctx, "tok1", consoleRec("vm1", exp), 30*time.Second); messages.KindOf(err) != messages.KindConflict {
		t.Fatalf("a second token with the same id: %v", err)
	}
	if _, err := s.ConsumeConsoleToken(ctx, "tok1", "wrong", "vm1"); err != store.ErrConsoleTokenInvalid {
		t.Fatalf("wrong secret: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, err := s.ConsumeConsoleToken(ctx, "tok1", "h-vm1", "vm1")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && rec.User == "alice" && rec.VM == "vm1" && rec.Mode == messages.ConsoleInteractive:
				won++
			case err != store.ErrConsoleTokenInvalid:
				t.Errorf("consume: %+v %v", rec, err)
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d uses of one token succeeded, want 1", won)
	}
	if _, err := s.ConsumeConsoleToken(ctx, "tok1", "h-vm1", "vm1"); err != store.ErrConsoleTokenInvalid {
		t.Fatalf("reuse: %v", err)
	}

	if err := s.PutConsoleToken(ctx, "tok2", consoleRec("vm1", exp), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeConsoleToken(ctx, "tok2", "h-vm1", "vm2"); err != store.ErrConsoleTokenInvalid {
		t.Fatalf("another vm: %v", err)
	}
	if _, err := s.ConsumeConsoleToken(ctx, "tok2", "h-vm1", "vm1"); err != store.ErrConsoleTokenInvalid {
		t.Fatalf("a token tried on another vm must be burnt: %v", err)
	}
}

// TestConsoleTokenExpiry: the lease removes an unused token by itself, and a
// token past its expiry is refused even while its key still exists.
func TestConsoleTokenExpiry(t *testing.T) {
	clock := newClock()
	s := startStore(t, store.WithClock(clock.Now))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	key := store.RowKey("consoletokens", "short")
	w := s.Client().Watch(ctx, key)
	if err := s.PutConsoleToken(ctx, "short", consoleRec("vm1", clock.Now().Add(time.Hour)), time.Second); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Client().Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("token row: %+v %v", resp, err)
	}
	// Wait for the lease to delete the key: an event, not a sleep.
	deleted := false
	for ev := range w {
		for _, e := range ev.Events {
			if e.Type == clientv3.EventTypeDelete {
				deleted = true
			}
		}
		if deleted {
			break
		}
	}
	if !deleted {
		t.Fatalf("the lease never removed the token: %v", ctx.Err())
	}
	if _, err := s.ConsumeConsoleToken(ctx, "short", "h-vm1", "vm1"); err != store.ErrConsoleTokenInvalid {
		t.Fatalf("expired by lease: %v", err)
	}

	if err := s.PutConsoleToken(ctx, "late", consoleRec("vm1", clock.Now().Add(30*time.Second)), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	clock.Add(31 * time.Second)
	if _, err := s.ConsumeConsoleToken(ctx, "late", "h-vm1", "vm1"); err != store.ErrConsoleTokenInvalid {
		t.Fatalf("expired by clock: %v", err)
	}
}
