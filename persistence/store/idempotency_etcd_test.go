//go:build etcd

package store_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
)

// leaseTTL is the reservations' lease TTL in these tests; etcd may raise it
// to its minimum (1.5 times the election timeout).
const leaseTTL = 2 * time.Second

// twoReplicas returns the stores of two replicas sharing one member, each
// with a client of its own: closing a replica's client is what SIGKILL
// does to it (its lease is no longer kept alive, nothing else runs).
func twoReplicas(t *testing.T) (m *etcd.Member, a, b *store.Store) {
	t.Helper()
	m = startMember(t, 0)
	a = store.New(m.NewClient(), store.WithIdempotencyLeaseTTL(leaseTTL))
	b = store.New(m.NewClient(), store.WithIdempotencyLeaseTTL(leaseTTL))
	return m, a, b
}

// kill is SIGKILL of the replica of s: its client closes, nothing of its
// bookkeeping runs.
func kill(s *store.Store) { _ = s.Client().Close() }

// within bounds how long a retry may be blocked by a dead replica's
// reservation: the lease TTL and generous room for a loaded host.
const within = leaseTTL + 5*time.Second

const scope = "alice POST /v1/vms"

func testVM(name string) *messages.VM {
	return &messages.VM{ID: messages.NewID(), Name: name, Owner: "alice"}
}

// write is the request's write: a VM row, committed under ctx (the
// reservation, when ctx carries one).
func write(ctx context.Context, s *store.Store, vm *messages.VM) error {
	t := store.NewTxn().Create(store.VMs, vm)
	return s.Commit(ctx, t)
}

// TestReplaceExpiredIdempotencyOnce has many retries find the same expired
// record at once; exactly one may replace it, the rest must see its
// reservation rather than each running the request.
func TestReplaceExpiredIdempotencyOnce(t *testing.T) {
	clock := newClock()
	s := startStore(t, store.WithClock(clock.Now))
	ctx := context.Background()
	hold, _, err := s.ReserveIdempotency(ctx, scope, "k", "h", 24*time.Hour)
	if err != nil || hold == nil {
		t.Fatalf("reserve: %v %v", hold, err)
	}
	if ok, err := hold.Complete(ctx, store.IdempotencyRecord{RequestHash: "h", Status: 202, CreatedAt: clock.Now()}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	clock.Add(25 * time.Hour)

	const racers = 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range racers {
		wg.Go(func() {
			h, cur, err := s.ReserveIdempotency(ctx, scope, "k", "h", 24*time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if h != nil {
				won++
			} else if cur != nil && cur.Done {
				t.Errorf("loser saw %+v, want the winner's fresh reservation", cur)
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d retries replaced the expired record, want exactly 1", won)
	}
}

// TestReservationDiesWithItsReplica: the kill point is after the
// reservation, before any write. A retry on the other replica is answered
// "in progress" while the holder lives, and takes the key over once the
// holder's lease is gone, well before the old minute.
func TestReservationDiesWithItsReplica(t *testing.T) {
	ctx := t.Context()
	_, a, b := twoReplicas(t)
	if h, _, err := a.ReserveIdempotency(ctx, scope, "k", "h", time.Hour); err != nil || h == nil {
		t.Fatalf("reserve on a: %v %v", h, err)
	}
	if h, prior, err := b.ReserveIdempotency(ctx, scope, "k", "h", time.Hour); err != nil || h != nil || prior == nil || prior.Done || prior.AnswerLost() {
		t.Fatalf("retry on b while a lives = %v %+v %v; want in progress", h, prior, err)
	}
	kill(a)
	killed := time.Now()
	var hold *store.Reservation
	testutil.EventuallyReport(t, within, 50*time.Millisecond, "the retry on b takes the key over", func() (bool, string) {
		h, prior, err := b.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
		hold = h
		return h != nil, fmtRecord(prior, err)
	})
	t.Logf("key taken over %v after the kill", time.Since(killed).Round(time.Millisecond))
	if err := write(store.WithReservation(ctx, hold), b, testVM("web")); err != nil {
		t.Fatalf("the retry's write: %v", err)
	}
}

// TestCommittedWriteOutlivesItsReplica: the kill point is after the write
// committed, before its answer was recorded. The write marked the key in
// its own transaction, so no retry runs the request again: while the
// holder lives a retry is told "in progress"; once it is dead, that the
// answer is lost, naming the row written.
func TestCommittedWriteOutlivesItsReplica(t *testing.T) {
	ctx := t.Context()
	_, a, b := twoReplicas(t)
	hold, _, err := a.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
	if err != nil || hold == nil {
		t.Fatalf("reserve on a: %v %v", hold, err)
	}
	vm := testVM("web")
	if err := write(store.WithReservation(ctx, hold), a, vm); err != nil {
		t.Fatal(err)
	}
	if !hold.Committed() {
		t.Fatal("the reservation does not know its write committed")
	}
	if h, prior, err := b.ReserveIdempotency(ctx, scope, "k", "h", time.Hour); err != nil || h != nil || prior == nil || !prior.Committed || prior.AnswerLost() {
		t.Fatalf("retry while a lives = %v %+v %v; want in progress (committed)", h, prior, err)
	}
	kill(a)
	testutil.EventuallyReport(t, within, 50*time.Millisecond, "the retry on b is told the answer is lost", func() (bool, string) {
		h, prior, err := b.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
		if h != nil {
			t.Fatal("a retry reserved the key of a request whose write committed: it would run twice")
		}
		return prior != nil && prior.AnswerLost(), fmtRecord(prior, err)
	})
	_, prior, _ := b.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
	if !slices.Contains(prior.Written, "vms/"+vm.ID) {
		t.Errorf("written = %v, want vms/%s", prior.Written, vm.ID)
	}
}

// TestLostReservationRefusesTheWrite: a replica cut off past its lease (its
// process still running) lost its reservation, and a retry on another
// replica took the key over. The cut-off handler's write is refused by the
// reservation's compare in its own transaction; its late bookkeeping
// touches nothing of the retry's.
func TestLostReservationRefusesTheWrite(t *testing.T) {
	ctx := t.Context()
	m, a, b := twoReplicas(t)
	hold, _, err := a.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
	if err != nil || hold == nil {
		t.Fatalf("reserve on a: %v %v", hold, err)
	}
	// The handler on a keeps running while its replica's lease is gone:
	// its writes go through a client that still works.
	kill(a)
	survivorA := store.New(m.NewClient())
	var retry *store.Reservation
	testutil.EventuallyReport(t, within, 50*time.Millisecond, "the retry on b takes the key over", func() (bool, string) {
		h, prior, err := b.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
		retry = h
		return h != nil, fmtRecord(prior, err)
	})
	first := testVM("web")
	if err := write(store.WithReservation(ctx, hold), survivorA, first); !errors.Is(err, store.ErrReservationLost) {
		t.Fatalf("the cut-off handler's write = %v, want %v", err, store.ErrReservationLost)
	}
	if _, err := survivorA.GetVM(ctx, first.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("the refused write is there: %v", err)
	}
	second := testVM("web")
	if err := write(store.WithReservation(ctx, retry), b, second); err != nil {
		t.Fatalf("the retry's write: %v", err)
	}
	// The cut-off handler's bookkeeping, late: neither recording nor
	// abandoning may touch the retry's key.
	if ok, err := hold.Complete(ctx, store.IdempotencyRecord{RequestHash: "h", Status: 202}); err != nil || ok {
		t.Fatalf("late complete = %v, %v; want not recorded", ok, err)
	}
	if err := hold.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := retry.Complete(ctx, store.IdempotencyRecord{RequestHash: "h", Status: 202, Body: []byte("second")}); err != nil || !ok {
		t.Fatalf("the retry's complete = %v, %v", ok, err)
	}
	_, prior, _ := b.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
	if prior == nil || !prior.Done || string(prior.Body) != "second" || !slices.Contains(prior.Written, "vms/"+second.ID) {
		t.Fatalf("record = %+v, want the retry's answer", prior)
	}
}

// TestAbandonAfterCommitMarksLost: a handler whose write committed but that
// ended with a 5xx (its actor's answer timed out) abandons its key; the
// key is not freed (a retry would run the write again) but marked lost.
// Before any write, abandoning frees the key.
func TestAbandonAfterCommitMarksLost(t *testing.T) {
	ctx := t.Context()
	_, a, b := twoReplicas(t)
	hold, _, _ := a.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
	if err := write(store.WithReservation(ctx, hold), a, testVM("web")); err != nil {
		t.Fatal(err)
	}
	if err := hold.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	if h, prior, err := b.ReserveIdempotency(ctx, scope, "k", "h", time.Hour); h != nil || prior == nil || !prior.AnswerLost() {
		t.Fatalf("retry after a committed, abandoned attempt = %v %+v %v; want answer lost", h, prior, err)
	}

	unwritten, _, _ := a.ReserveIdempotency(ctx, scope, "k2", "h", time.Hour)
	if err := unwritten.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	if h, prior, err := b.ReserveIdempotency(ctx, scope, "k2", "h", time.Hour); h == nil {
		t.Fatalf("retry after an abandoned attempt without a write = %+v %v; want reserved", prior, err)
	}
}

// TestSecondWriteOfOneRequest: a request that commits twice (the write,
// then a follow-up) keeps its reservation across both; the record names
// both rows.
func TestSecondWriteOfOneRequest(t *testing.T) {
	ctx := t.Context()
	_, a, _ := twoReplicas(t)
	hold, _, _ := a.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
	rctx := store.WithReservation(ctx, hold)
	one, two := testVM("one"), testVM("two")
	if err := write(rctx, a, one); err != nil {
		t.Fatal(err)
	}
	if err := write(rctx, a, two); err != nil {
		t.Fatalf("second write of the same request: %v", err)
	}
	if ok, err := hold.Complete(ctx, store.IdempotencyRecord{RequestHash: "h", Status: 202}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	_, prior, _ := a.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
	if !prior.Done || !prior.Committed || !slices.Contains(prior.Written, "vms/"+one.ID) || !slices.Contains(prior.Written, "vms/"+two.ID) {
		t.Fatalf("record = %+v", prior)
	}
}

func fmtRecord(r *store.IdempotencyRecord, err error) string {
	if err != nil {
		return err.Error()
	}
	if r == nil {
		return "no record"
	}
	return "done=" + boolStr(r.Done) + " committed=" + boolStr(r.Committed) + " answer_lost=" + boolStr(r.AnswerLost())
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestReserveAfterLeaseExpiredUnnoticed: the replica's lease ended (it was
// stalled past the TTL) before its keepalive noticed; the next reservation
// takes a new lease instead of failing.
func TestReserveAfterLeaseExpiredUnnoticed(t *testing.T) {
	ctx := t.Context()
	_, a, _ := twoReplicas(t)
	if h, _, err := a.ReserveIdempotency(ctx, scope, "k1", "h", time.Hour); err != nil || h == nil {
		t.Fatalf("reserve: %v %v", h, err)
	}
	resp, err := a.Client().Get(ctx, store.IdempotencyKey(scope, "k1"))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("the reservation is not bound to a lease: %v %v", resp, err)
	}
	if _, err := a.Client().Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	if h, prior, err := a.ReserveIdempotency(ctx, scope, "k2", "h", time.Hour); err != nil || h == nil {
		t.Fatalf("reserve after the lease ended = %v %+v %v; want reserved", h, prior, err)
	}
}

// BenchmarkRetryAfterHolderKilled measures, per kill, the time from the
// death of a replica holding an Idempotency-Key reservation (its client
// closed: its lease is no longer kept alive, nothing revoked) to a retry
// of the request on another replica getting the key, with the production
// lease TTL (store.DefaultIdempotencyLeaseTTL). Before the lease, it was a
// minute.
func BenchmarkRetryAfterHolderKilled(b *testing.B) {
	var total, worst time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		m := startMember(b, 0)
		a := store.New(m.NewClient())
		rb := store.New(m.NewClient())
		ctx := context.Background()
		if h, _, err := a.ReserveIdempotency(ctx, scope, "k", "h", time.Hour); err != nil || h == nil {
			b.Fatalf("reserve: %v %v", h, err)
		}
		b.StartTimer()
		killed := time.Now()
		kill(a)
		for {
			h, _, err := rb.ReserveIdempotency(ctx, scope, "k", "h", time.Hour)
			if err != nil {
				b.Fatal(err)
			}
			if h != nil {
				break
			}
			if time.Since(killed) > time.Minute {
				b.Fatal("no takeover within a minute")
			}
			time.Sleep(5 * time.Millisecond) // the measurement's resolution
		}
		took := time.Since(killed)
		b.StopTimer()
		total += took
		worst = max(worst, took)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/takeover")
	b.ReportMetric(float64(worst.Milliseconds()), "max-ms")
	b.ReportMetric(float64(store.DefaultIdempotencyLeaseTTL.Milliseconds()), "lease-ttl-ms")
}

// TestStaleRecordsOfALiveHolder: a holder whose bookkeeping failed for good
// (etcd unreachable throughout its retries) stays alive with its lease; its
// unfinished reservation is taken over by the same request after two
// minutes, and its committed, unanswered record is then reported lost,
// instead of either answering "in progress" for the replica's life.
func TestStaleRecordsOfALiveHolder(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	m := startMember(t, 0)
	a := store.New(m.NewClient(), store.WithClock(clk.Now))
	b := store.New(m.NewClient(), store.WithClock(clk.Now))
	old, _, _ := a.ReserveIdempotency(ctx, scope, "reserved", "h", time.Hour)
	committed, _, _ := a.ReserveIdempotency(ctx, scope, "committed", "h", time.Hour)
	if err := write(store.WithReservation(ctx, committed), a, testVM("web")); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := b.ReserveIdempotency(ctx, scope, "reserved", "h", time.Hour); h != nil {
		t.Fatal("a fresh reservation of a live holder was taken over")
	}
	if _, prior, _ := b.ReserveIdempotency(ctx, scope, "committed", "h", time.Hour); prior == nil || prior.AnswerLost() {
		t.Fatalf("fresh committed record of a live holder = %+v; want in progress", prior)
	}
	clk.Add(3 * time.Minute)
	taken, _, err := b.ReserveIdempotency(ctx, scope, "reserved", "h", time.Hour)
	if err != nil || taken == nil {
		t.Fatalf("stale reservation not taken over: %v", err)
	}
	if err := write(store.WithReservation(ctx, old), a, testVM("late")); !errors.Is(err, store.ErrReservationLost) {
		t.Fatalf("the old handler's late write = %v, want refused", err)
	}
	if _, prior, _ := b.ReserveIdempotency(ctx, scope, "committed", "h", time.Hour); prior == nil || !prior.AnswerLost() {
		t.Fatalf("stale committed record = %+v; want its answer lost", prior)
	}
}

// ambiguousKV makes the next transaction's call fail, after etcd committed
// it (commit true) or without sending it (commit false): what a call cut
// by a lost quorum, or timed out, looks like to the caller.
type ambiguousKV struct {
	clientv3.KV
	next *atomic.Int32 // 0: pass; 1: fail after commit; 2: fail unsent
}

func (k ambiguousKV) Txn(ctx context.Context) clientv3.Txn {
	return ambiguousTxn{k.KV.Txn(ctx), k.next}
}

type ambiguousTxn struct {
	clientv3.Txn
	next *atomic.Int32
}

func (t ambiguousTxn) If(c ...clientv3.Cmp) clientv3.Txn { return ambiguousTxn{t.Txn.If(c...), t.next} }
func (t ambiguousTxn) Then(o ...clientv3.Op) clientv3.Txn {
	return ambiguousTxn{t.Txn.Then(o...), t.next}
}
func (t ambiguousTxn) Else(o ...clientv3.Op) clientv3.Txn {
	return ambiguousTxn{t.Txn.Else(o...), t.next}
}

func (t ambiguousTxn) Commit() (*clientv3.TxnResponse, error) {
	switch t.next.Swap(0) {
	case 1:
		if _, err := t.Txn.Commit(); err != nil {
			return nil, err
		}
		return nil, errors.New("etcdserver: request timed out")
	case 2:
		return nil, errors.New("etcdserver: request timed out")
	}
	return t.Txn.Commit()
}

// TestFencedCommitOfUnknownOutcome: a write under a reservation whose call
// failed (a lost quorum cuts the call, not the proposal) is looked up by
// its mark in the key: committed, it is reported committed, so the request
// answers what it did rather than a 503 whose retry is told the answer was
// lost; not committed, the error stands.
func TestFencedCommitOfUnknownOutcome(t *testing.T) {
	ctx := t.Context()
	m := startMember(t, 0)
	cli := m.NewClient()
	next := &atomic.Int32{}
	cli.KV = ambiguousKV{KV: cli.KV, next: next}
	s := store.New(cli)

	hold, _, err := s.ReserveIdempotency(ctx, scope, "k1", "h", time.Hour)
	if err != nil || hold == nil {
		t.Fatal(hold, err)
	}
	vm := testVM("web")
	next.Store(1)
	if err := write(store.WithReservation(ctx, hold), s, vm); err != nil {
		t.Fatalf("a committed write of unknown outcome = %v, want resolved as committed", err)
	}
	got, err := s.GetVM(ctx, vm.ID)
	if err != nil || !hold.Committed() || vm.Revision == 0 || got.Revision != vm.Revision {
		t.Fatalf("vm %+v (%v), committed %v, revision %d", got, err, hold.Committed(), vm.Revision)
	}

	hold2, _, _ := s.ReserveIdempotency(ctx, scope, "k2", "h", time.Hour)
	next.Store(2)
	if err := write(store.WithReservation(ctx, hold2), s, testVM("other")); err == nil {
		t.Fatal("a write that never reached etcd was reported committed")
	}
	if hold2.Committed() {
		t.Fatal("the reservation believes its unsent write committed")
	}
}
