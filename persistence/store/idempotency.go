package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// DefaultIdempotencyLeaseTTL is the TTL of the lease a replica binds its
// Idempotency-Key reservations to: a replica that dies (SIGKILL, power
// loss) takes its unfinished reservations with it this long after its last
// keepalive, so a retry on another replica is not blocked by them.
const DefaultIdempotencyLeaseTTL = 3 * time.Second

// staleReservation is how long an unfinished record may stay so before
// its request is presumed dead although its holder's lease lives: no
// handler runs that long (an actor's ask is 10 s, a drain 30 s, the
// bookkeeping's retries 30 s), but its bookkeeping may have failed for
// good (etcd unreachable throughout). A reservation is then taken over by
// the same request (the fence refuses the old handler's writes), and a
// committed record's answer is reported lost. It also covers reservations
// written without a lease by replicas of an earlier version.
const staleReservation = 2 * time.Minute

// maxWritten bounds the rows an idempotency record names.
const maxWritten = 8

// ErrReservationLost refuses a write whose Idempotency-Key reservation is no
// longer held by the request making it: its replica's lease expired (the
// replica was cut off or stalled) and another attempt of the same request
// may have taken the key over. Nothing was written; the client retries.
var ErrReservationLost = &messages.Error{Kind: messages.KindUnavailable, Code: "idempotency_reservation_lost",
	Message: "this replica lost the Idempotency-Key's reservation before the write; nothing was written, retry with the same key"}

// IdempotencyRecord is what the API remembers of a write sent with an
// Idempotency-Key: the request's fingerprint and, once done, its answer.
//
// A record goes through these states, each transition a compare-and-set:
// reserved (bound to the reserving replica's lease, so it vanishes with
// that replica), committed (a write of the request committed, and the same
// transaction detached the record from the lease and set Committed), done
// (the answer is recorded), and lost (committed, but the request ended
// without an answer to keep).
type IdempotencyRecord struct {
	RequestHash string            `json:"request_hash"`
	Done        bool              `json:"done"`
	Status      int               `json:"status,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Body        []byte            `json:"body,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	// Committed says a write of the request committed: the record was
	// rewritten in that write's transaction.
	Committed bool `json:"committed,omitempty"`
	// Lost says the request ended, after a write of it committed, with
	// nothing to keep as its answer (a 5xx, a timeout waiting for the actor).
	Lost bool `json:"lost,omitempty"`
	// Written names the rows the request's writes put, "<resource>/<id>"
	// (vms, tasks, networks, nodes), at most maxWritten.
	Written []string `json:"written,omitempty"`
	// Holder tells the attempt that reserved the key (a random id) and
	// Lease the replica lease the reservation was bound to; both are empty
	// in records of earlier versions.
	Holder string `json:"holder,omitempty"`
	Lease  int64  `json:"lease,omitempty"`

	revision int64
	// answerLost is set by ReserveIdempotency on a committed record whose
	// answer will never come: lost, or its holder's lease is gone.
	answerLost bool
}

// AnswerLost reports a record whose request was carried out (a write
// committed) but whose answer will never be recorded: the replica serving
// it died, or it ended with an error after the write. A retry must not run
// the request again.
func (r *IdempotencyRecord) AnswerLost() bool { return r.answerLost }

// IdempotencyKey is the etcd key of the record of an Idempotency-Key key
// sent in scope (the caller, method and route).
func IdempotencyKey(scope, key string) string { return idempotencyKey(scope, key) }

func idempotencyKey(scope, key string) string {
	sum := sha256.Sum256([]byte(scope + "\x00" + key))
	return Root + idempotency + "/" + hex.EncodeToString(sum[:])
}

// Reservation is one attempt's hold on an Idempotency-Key. Put it in the
// context of the request's writes (WithReservation): every Commit made
// with that context then also requires the reservation to be this
// attempt's, and marks the record committed in the same transaction.
type Reservation struct {
	s   *Store
	key string
	rec IdempotencyRecord
	// reserved is the record exactly as put; a release compares it.
	reserved string
	// createRev is the revision that created the key, 0 when the reserve
	// failed with an unknown outcome. It stays the key's create revision
	// across this attempt's own rewrites, and changes if the key vanished
	// (the lease expired) and was reserved again: the fence compares it.
	createRev int64

	mu        sync.Mutex
	committed bool
	written   []string
	// rev is the key's last mod revision this attempt knows of (its
	// reservation's, then its last commit's).
	rev int64
}

// resolveMax bounds how long a commit of unknown outcome is looked up.
const resolveMax = 5 * time.Second

// resolve finds out whether a fenced commit whose call failed committed
// after all (a lost quorum cuts the call, not the proposal): it did if the
// key holds the value that commit wrote, at a revision past the last one
// this attempt knew, in this attempt's incarnation of the key (nothing else
// writes it meanwhile: the attempt's own bookkeeping runs after the
// handler). It reads until the cluster answers, within resolveMax, and
// answers the commit's revision.
func (r *Reservation) resolve(ctx context.Context, s *Store, value string) (int64, bool) {
	r.mu.Lock()
	before := r.rev
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveMax)
	defer cancel()
	wait := 50 * time.Millisecond
	for {
		resp, err := s.cli.Get(ctx, r.key)
		if err == nil {
			if len(resp.Kvs) == 1 {
				kv := resp.Kvs[0]
				if kv.CreateRevision == r.createRev && kv.ModRevision > before && string(kv.Value) == value {
					return kv.ModRevision, true
				}
			}
			return 0, false
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// Committed reports whether a write made under the reservation committed.
func (r *Reservation) Committed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.committed
}

type reservationKey struct{}

// WithReservation makes every Commit under ctx conditional on r still
// holding its key, and a record of the write in the key.
func WithReservation(ctx context.Context, r *Reservation) context.Context {
	if r == nil {
		return ctx
	}
	return context.WithValue(ctx, reservationKey{}, r)
}

// ReservationFrom is the reservation WithReservation put in ctx, or nil.
func ReservationFrom(ctx context.Context) *Reservation {
	r, _ := ctx.Value(reservationKey{}).(*Reservation)
	return r
}

// ReserveIdempotency reserves an Idempotency-Key for one attempt of a
// request, bound to this replica's lease. If the key holds a record, it
// answers that record instead (nil reservation): done (replay it), in
// progress (another attempt holds it), committed with its answer lost, or
// a different request's. A record older than expireAfter is forgotten and
// the key reserved anew.
//
// On an error the reservation may still have been taken (the transaction
// reached Raft before the call gave up): the returned Reservation, when not
// nil, must then be abandoned, so that it blocks no retry.
func (s *Store) ReserveIdempotency(ctx context.Context, scope, key, requestHash string, expireAfter time.Duration) (*Reservation, *IdempotencyRecord, error) {
	k := idempotencyKey(scope, key)
	for range 3 {
		lease, err := s.holds.lease(ctx, s)
		if err != nil {
			return nil, nil, unavailable(err)
		}
		r := &Reservation{s: s, key: k, rec: IdempotencyRecord{RequestHash: requestHash, CreatedAt: s.now(),
			Holder: holderID(), Lease: int64(lease)}}
		b, _ := json.Marshal(r.rec)
		r.reserved = string(b)
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, r.reserved, clientv3.WithLease(lease))).
			Else(clientv3.OpGet(k)).Commit()
		if isLeaseNotFound(err) {
			// The lease expired before its keepalive noticed (this
			// replica was stalled past the TTL): nothing was written;
			// take a new one.
			s.holds.forget(lease)
			continue
		}
		if err != nil {
			return r, nil, unavailable(err)
		}
		if resp.Succeeded {
			r.createRev, r.rev = resp.Header.Revision, resp.Header.Revision
			return r, nil, nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue // released meanwhile
		}
		old, err := decodeIdempotency(kvs[0])
		if err != nil {
			return nil, nil, err
		}
		if s.forgettable(old, requestHash, expireAfter) {
			// Forget it if nobody changed it meanwhile; of several retries
			// doing this at once, one deletes and the others find the key
			// gone or reserved anew.
			if _, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", old.revision)).
				Then(clientv3.OpDelete(k)).Commit(); err != nil {
				return nil, nil, unavailable(err)
			}
			continue
		}
		if old.Committed && !old.Done {
			old.answerLost = old.Lost || s.now().Sub(old.CreatedAt) > staleReservation ||
				!s.leaseAlive(ctx, clientv3.LeaseID(old.Lease))
		}
		return nil, old, nil
	}
	// Raced three times with other attempts: the caller says in progress.
	return nil, nil, nil
}

// forgettable reports a record a new reservation may replace: past its
// retention, or an unfinished reservation of the same request past
// staleReservation.
func (s *Store) forgettable(old *IdempotencyRecord, requestHash string, expireAfter time.Duration) bool {
	age := s.now().Sub(old.CreatedAt)
	if age > expireAfter {
		return true
	}
	return !old.Done && !old.Committed && old.RequestHash == requestHash && age > staleReservation
}

// leaseAlive reports whether lease still exists; when etcd cannot tell, it
// says yes (the caller then answers "in progress", and the client retries).
func (s *Store) leaseAlive(ctx context.Context, lease clientv3.LeaseID) bool {
	if lease == 0 {
		return true
	}
	resp, err := s.cli.TimeToLive(ctx, lease)
	if err != nil {
		return !isLeaseNotFound(err)
	}
	return resp.TTL != -1
}

func isLeaseNotFound(err error) bool {
	return err != nil && (errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) ||
		strings.Contains(err.Error(), rpctypes.ErrLeaseNotFound.Error()))
}

func decodeIdempotency(kv *mvccpb.KeyValue) (*IdempotencyRecord, error) {
	var rec IdempotencyRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return nil, fmt.Errorf("%w: idempotency record: %v", ErrCorruptRow, err)
	}
	rec.revision = kv.ModRevision
	return &rec, nil
}

func holderID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Complete records the request's answer, if the key is still this
// attempt's; recorded is false when it is not (the reservation was lost
// before any write of the request committed, so nothing it did needs the
// record). The record is no longer bound to the lease.
func (r *Reservation) Complete(ctx context.Context, answer IdempotencyRecord) (recorded bool, err error) {
	if r.createRev == 0 {
		return false, nil
	}
	r.mu.Lock()
	answer.Done, answer.Committed, answer.Written = true, r.committed, slices.Clone(r.written)
	r.mu.Unlock()
	answer.Holder, answer.Lease = r.rec.Holder, r.rec.Lease
	if answer.CreatedAt.IsZero() {
		// Retention counts from the answer.
		answer.CreatedAt = r.s.now()
	}
	b, err := json.Marshal(answer)
	if err != nil {
		return false, fmt.Errorf("store: encode idempotency record: %w", err)
	}
	resp, err := r.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", r.createRev)).
		Then(clientv3.OpPut(r.key, string(b))).Commit()
	if err != nil {
		return false, unavailable(err)
	}
	return resp.Succeeded, nil
}

// Abandon ends an attempt that leaves no answer to keep. If no write of it
// committed, the key is freed, so a retry runs the request; if one did,
// the record is marked lost, so a retry is told so instead of running it a
// second time. It touches nothing that is not this attempt's.
func (r *Reservation) Abandon(ctx context.Context) error {
	for range 3 {
		resp, err := r.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(r.key), "=", r.reserved)).
			Then(clientv3.OpDelete(r.key)).Else(clientv3.OpGet(r.key)).Commit()
		if err != nil {
			return unavailable(err)
		}
		if resp.Succeeded {
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil
		}
		cur, err := decodeIdempotency(kvs[0])
		if err != nil || cur.Holder != r.rec.Holder || !cur.Committed || cur.Done || cur.Lost {
			return err
		}
		cur.Lost = true
		b, _ := json.Marshal(cur)
		mark, err := r.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(r.key), "=", cur.revision)).
			Then(clientv3.OpPut(r.key, string(b))).Commit()
		if err != nil {
			return unavailable(err)
		}
		if mark.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("store: idempotency record kept changing while abandoned")
}

// fence is what a Commit under r adds: the compare that the key is still
// this attempt's, the guard that explains its failure, and the put that
// marks the record committed (and detaches it from the lease, so it
// outlives this replica) with the rows t writes.
func (r *Reservation) fence(t *Txn) (clientv3.Cmp, guard, clientv3.Op, []string, string) {
	r.mu.Lock()
	written := slices.Clone(r.written)
	r.mu.Unlock()
	for _, op := range t.ops {
		if len(written) >= maxWritten {
			break
		}
		if name, ok := writtenRow(op); ok && !slices.Contains(written, name) {
			written = append(written, name)
		}
	}
	rec := r.rec
	rec.Committed, rec.Written = true, written
	b, _ := json.Marshal(rec)
	return clientv3.Compare(clientv3.CreateRevision(r.key), "=", r.createRev),
		guard{key: r.key, createRev: r.createRev, byCreate: true, fail: ErrReservationLost},
		clientv3.OpPut(r.key, string(b)), written, string(b)
}

// committedWith notes a write committed at rev and the rows named so far.
func (r *Reservation) committedWith(written []string, rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.committed = true
	r.written = written
	r.rev = max(r.rev, rev)
}

// writtenRow names the row an op puts, for the rows a client can read.
func writtenRow(op clientv3.Op) (string, bool) {
	if !op.IsPut() {
		return "", false
	}
	rest, ok := strings.CutPrefix(string(op.KeyBytes()), Root)
	if !ok {
		return "", false
	}
	res, id, ok := strings.Cut(rest, "/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", false
	}
	switch res {
	case VMs, Tasks, Networks, Nodes:
		return res + "/" + id, true
	}
	return "", false
}

// SweepIdempotency removes records older than the retention window.
func (s *Store) SweepIdempotency(ctx context.Context, retention time.Duration) (int, error) {
	cutoff := s.now().Add(-retention)
	return s.Sweep(ctx, Root+idempotency+"/", func(it SweepItem) []clientv3.Op {
		var rec IdempotencyRecord
		if json.Unmarshal(it.Value, &rec) != nil || rec.CreatedAt.After(cutoff) {
			return nil
		}
		return []clientv3.Op{clientv3.OpDelete(it.Key)}
	})
}

// holdLease keeps the lease this replica binds its reservations to: granted
// on the first reservation, kept alive while the store lives, replaced by
// a new one if it expired (the replica was cut off longer than its TTL;
// the reservations bound to it are gone, and their writes are refused).
type holdLease struct {
	mu   sync.Mutex
	ttl  time.Duration
	id   clientv3.LeaseID
	lost chan struct{}
	stop context.CancelFunc
}

func (h *holdLease) lease(ctx context.Context, s *Store) (clientv3.LeaseID, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.id != 0 {
		select {
		case <-h.lost:
			h.stop()
			h.id = 0
		default:
			return h.id, nil
		}
	}
	ttl := max(int64(h.ttl/time.Second), 1)
	g, err := s.cli.Grant(ctx, ttl)
	if err != nil {
		return 0, err
	}
	kctx, stop := context.WithCancel(context.Background())
	ch, err := s.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		stop()
		return 0, err
	}
	lost := make(chan struct{})
	go func() {
		for range ch {
		}
		close(lost)
	}()
	h.id, h.lost, h.stop = g.ID, lost, stop
	return h.id, nil
}

// forget drops lease if it is still the one held, so the next reservation
// takes a new one.
func (h *holdLease) forget(lease clientv3.LeaseID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.id == lease && h.id != 0 {
		h.stop()
		h.id = 0
	}
}

// ReleaseIdempotencyLease revokes the lease of this replica's reservations
// (at shutdown, once requests have drained): any it still holds vanish at
// once instead of after the TTL.
func (s *Store) ReleaseIdempotencyLease(ctx context.Context) error {
	h := &s.holds
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.id == 0 {
		return nil
	}
	h.stop()
	_, err := s.cli.Revoke(ctx, h.id)
	h.id = 0
	if err != nil && !isLeaseNotFound(err) {
		return unavailable(err)
	}
	return nil
}

// Hold is an attempt's hold on an Idempotency-Key as the HTTP layer uses
// it; *Reservation is the store's.
type Hold interface {
	// Bind makes the writes made under the returned context fenced by
	// the hold (WithReservation).
	Bind(ctx context.Context) context.Context
	Complete(ctx context.Context, answer IdempotencyRecord) (recorded bool, err error)
	Abandon(ctx context.Context) error
}

// Bind is WithReservation(ctx, r).
func (r *Reservation) Bind(ctx context.Context) context.Context { return WithReservation(ctx, r) }

// ReserveIdempotencyHold is ReserveIdempotency answering a Hold (nil when
// no reservation was made or may have been).
func (s *Store) ReserveIdempotencyHold(ctx context.Context, scope, key, requestHash string, expireAfter time.Duration) (Hold, *IdempotencyRecord, error) {
	r, prior, err := s.ReserveIdempotency(ctx, scope, key, requestHash, expireAfter)
	if r == nil {
		return nil, prior, err
	}
	return r, prior, err
}
