package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Entity is a row the store can version: its id and the etcd mod revision it
// was read at, against which updates compare.
type Entity interface {
	EntityID() string
	EntityRevision() int64
	SetEntityRevision(int64)
}

// Store is the typed store. It is safe for concurrent use.
type Store struct {
	cli    *clientv3.Client
	maxOps int
	// now is the clock; tests replace it to age rows.
	now func() time.Time
	// tunnels allocates nodes' mesh addresses (nodes.go).
	tunnels tunnelAllocator
	// owners serializes usage changes per owner in this process (quotas.go).
	ownersMu sync.Mutex
	owners   map[string]*ownerLock
	// quotaOwners are the owners this process last saw with a quota.
	quotaOwners map[string]bool
	// allocLocks serializes allocation changes per node in this process
	// (allocations.go).
	allocLocks keyLocks
	// holds is the lease Idempotency-Key reservations are bound to
	// (idempotency.go).
	holds holdLease
}

// Option configures a Store.
type Option func(*Store)

// WithMaxTxnOps sets the per-transaction op limit (the member's --max-txn-ops).
func WithMaxTxnOps(n int) Option { return func(s *Store) { s.maxOps = n } }

// WithClock replaces the wall clock, for tests that age rows.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithIdempotencyLeaseTTL sets the TTL of the lease Idempotency-Key
// reservations are bound to (DefaultIdempotencyLeaseTTL; whole seconds).
func WithIdempotencyLeaseTTL(d time.Duration) Option { return func(s *Store) { s.holds.ttl = d } }

// New wraps an etcd client.
func New(cli *clientv3.Client, opts ...Option) *Store {
	s := &Store{cli: cli, maxOps: 128, now: time.Now, holds: holdLease{ttl: DefaultIdempotencyLeaseTTL}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Client exposes the etcd client for watches and health checks.
func (s *Store) Client() *clientv3.Client { return s.cli }

// MaxTxnOps is the op limit transactions are chunked under.
func (s *Store) MaxTxnOps() int { return s.maxOps }

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.now() }

// Ready reports whether etcd answers a linearizable read.
func (s *Store) Ready(ctx context.Context) error {
	if _, err := s.cli.Get(ctx, settingsKey, clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("store: etcd not ready: %w", err)
	}
	return nil
}

// Get loads one row into a new T.
func Get[T any, PT interface {
	*T
	Entity
}](ctx context.Context, s *Store, resource, id string) (PT, error) {
	resp, err := s.cli.Get(ctx, RowKey(resource, id))
	if err != nil {
		return nil, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, messages.NotFound(singularName(resource), id)
	}
	return decode[T, PT](resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

func decode[T any, PT interface {
	*T
	Entity
}](data []byte, rev int64) (PT, error) {
	v := PT(new(T))
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptRow, err)
	}
	v.SetEntityRevision(rev)
	return v, nil
}

// marshalRow encodes an entity without its revision: the revision is etcd's
// mod revision, and a copy inside the row would only ever be stale.
func marshalRow(e Entity) (string, error) {
	rev := e.EntityRevision()
	e.SetEntityRevision(0)
	b, err := json.Marshal(e)
	e.SetEntityRevision(rev)
	if err != nil {
		return "", fmt.Errorf("store: encode row: %w", err)
	}
	return string(b), nil
}

// LookupUnique returns the id that holds a unique value.
func (s *Store) LookupUnique(ctx context.Context, resource, field, value string) (string, error) {
	resp, err := s.cli.Get(ctx, UniqKey(resource, field, value))
	if err != nil {
		return "", unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return "", messages.NotFound(singularName(resource), value)
	}
	return string(resp.Kvs[0].Value), nil
}

func singularName(resource string) string {
	switch resource {
	case VMs:
		return "vm"
	case Tasks:
		return "task"
	case Jobs:
		return "job"
	case Users:
		return "user"
	case APITokens:
		return "api token"
	case RefreshFamilies:
		return "session"
	case Networks:
		return "network"
	case Events:
		return "event"
	case Pools:
		return "pool"
	case Volumes:
		return "volume"
	}
	return resource
}
