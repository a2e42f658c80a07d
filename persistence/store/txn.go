package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Txn collects the keys of one atomic change: rows, uniqueness guards, index
// keys, tasks and jobs commit together or not at all. Each guard remembers the
// error to report if it is what refused the transaction.
type Txn struct {
	cmps    []clientv3.Cmp
	ops     []clientv3.Op
	guards  []guard
	written []Entity
	err     error
	// freesTunnelIP marks a transaction that releases a node's mesh
	// address: its commit makes the store's allocator read the map again.
	freesTunnelIP bool
}

// guard is one precondition: key must have been created at createRev (0 means
// absent) or last modified at modRev.
type guard struct {
	key       string
	createRev int64
	modRev    int64
	byMod     bool
	// missingFails reports fail, not not_found, when a byMod key is gone:
	// a guarded document (a quota) may be removed by design.
	missingFails bool
	lease        clientv3.LeaseID
	byLease      bool
	// byCreate requires key to exist with create revision createRev (an
	// Idempotency-Key reservation, idempotency.go).
	byCreate bool
	// prefix makes key a prefix: no key under it may have been created
	// after createRev (0: no key may exist under it at all).
	prefix bool
	fail   error
}

// NewTxn starts an empty change.
func NewTxn() *Txn { return &Txn{} }

func (t *Txn) put(key string, e Entity) {
	if t.err != nil {
		return
	}
	v, err := marshalRow(e)
	if err != nil {
		t.err = err
		return
	}
	t.ops = append(t.ops, clientv3.OpPut(key, v))
	t.written = append(t.written, e)
}

// Create writes a new row; it fails if a row with the id exists.
func (t *Txn) Create(resource string, e Entity) *Txn {
	key := RowKey(resource, e.EntityID())
	t.requireAbsent(key, messages.Errorf(messages.KindConflict, "id_conflict", "%s %s already exists", singularName(resource), e.EntityID()))
	t.put(key, e)
	return t
}

// Update rewrites a row if it is still at the revision it was read at, so a
// stale writer gets a conflict instead of silently overwriting.
func (t *Txn) Update(resource string, e Entity) *Txn {
	key := RowKey(resource, e.EntityID())
	t.requireRevision(key, e.EntityRevision(), staleError(resource, e.EntityID()))
	t.put(key, e)
	return t
}

// Delete removes a row if it is still at the revision it was read at.
func (t *Txn) Delete(resource string, e Entity) *Txn {
	key := RowKey(resource, e.EntityID())
	t.requireRevision(key, e.EntityRevision(), staleError(resource, e.EntityID()))
	t.ops = append(t.ops, clientv3.OpDelete(key))
	return t
}

// ClaimUnique takes a unique value for id; it fails with a <resource>_<field>_conflict
// error if another id holds it.
func (t *Txn) ClaimUnique(resource, field, value, id string) *Txn {
	key := UniqKey(resource, field, value)
	t.requireAbsent(key, messages.NameConflict(resource, field, displayValue(value)))
	t.ops = append(t.ops, clientv3.OpPut(key, id))
	return t
}

// ClaimUniqueOr takes a unique value for id like ClaimUnique, but reports
// fail if another id holds it (an address in use rather than a name).
func (t *Txn) ClaimUniqueOr(resource, field, value, id string, fail error) *Txn {
	key := UniqKey(resource, field, value)
	t.requireAbsent(key, fail)
	t.ops = append(t.ops, clientv3.OpPut(key, id))
	return t
}

// RequireNoneCreatedUnder adds a precondition that no key under prefix was
// created after revision rev; rev 0 means no key may exist under it. It
// guards decisions taken over a whole set of keys (no other network overlaps,
// no address is still allocated) against a concurrent writer.
func (t *Txn) RequireNoneCreatedUnder(prefix string, rev int64, fail error) *Txn {
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(prefix), "<", rev+1).WithPrefix())
	t.guards = append(t.guards, guard{key: prefix, createRev: rev, prefix: true, fail: fail})
	return t
}

// RequireUnchanged adds a precondition that a row is still at revision rev
// (it exists and nobody wrote it since it was read), without writing it.
func (t *Txn) RequireUnchanged(resource, id string, rev int64, fail error) *Txn {
	t.requireRevision(RowKey(resource, id), rev, fail)
	return t
}

// ReleaseUnique frees a unique value.
func (t *Txn) ReleaseUnique(resource, field, value string) *Txn {
	t.ops = append(t.ops, clientv3.OpDelete(UniqKey(resource, field, value)))
	return t
}

// AddIndex lists id under a sort key of a resource's index.
func (t *Txn) AddIndex(resource, sortKey, id string) *Txn {
	t.ops = append(t.ops, clientv3.OpPut(IndexKey(resource, sortKey, id), ""))
	return t
}

// RemoveIndex drops id from a sort key of a resource's index.
func (t *Txn) RemoveIndex(resource, sortKey, id string) *Txn {
	t.ops = append(t.ops, clientv3.OpDelete(IndexKey(resource, sortKey, id)))
	return t
}

// DeleteKey removes a raw key without a precondition (claim keys, for instance).
func (t *Txn) DeleteKey(key string) *Txn {
	t.ops = append(t.ops, clientv3.OpDelete(key))
	return t
}

// RequireLease adds a precondition that key is bound to lease: a dispatcher that
// lost its claim can then no longer change the job.
func (t *Txn) RequireLease(key string, lease clientv3.LeaseID, fail error) *Txn {
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.LeaseValue(key), "=", lease))
	t.guards = append(t.guards, guard{key: key, lease: lease, byLease: true, fail: fail})
	return t
}

func (t *Txn) requireAbsent(key string, fail error) {
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	t.guards = append(t.guards, guard{key: key, fail: fail})
}

func (t *Txn) requireRevision(key string, rev int64, fail error) {
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.ModRevision(key), "=", rev))
	t.guards = append(t.guards, guard{key: key, modRev: rev, byMod: true, fail: fail})
}

// Len is the number of operations the change carries.
func (t *Txn) Len() int { return len(t.ops) }

// Commit applies the change in one etcd transaction. On success every entity it
// wrote carries the new revision. On refusal it reports the guard that failed.
func (s *Store) Commit(ctx context.Context, t *Txn) error {
	if t.err != nil {
		return t.err
	}
	if len(t.ops) > s.maxOps || len(t.cmps) > s.maxOps {
		return fmt.Errorf("%w: %d ops, %d compares, limit %d", ErrTooManyOps, len(t.ops), len(t.cmps), s.maxOps)
	}
	if IsDryRun(ctx) {
		// The same guards, nothing to do when they hold: etcd answers a
		// transaction without writes from its read path, so the revision
		// does not move, and a refusal is explained as for a real commit.
		// Nothing is written, so an Idempotency-Key's record is not marked.
		resp, err := s.cli.Txn(ctx).If(t.cmps...).Commit()
		if err != nil {
			return unavailable(err)
		}
		if !resp.Succeeded {
			return s.explain(ctx, t.guards)
		}
		return nil
	}
	cmps, ops, guards := t.cmps, t.ops, t.guards
	// A write made for a request with an Idempotency-Key commits only while
	// the request's reservation holds the key, and marks the record
	// committed in the same transaction: a write that committed is never
	// run again by a retry, and a replica that lost its reservation (cut
	// off past its lease) cannot write behind the retry's back. Its guard
	// comes first, so a lost reservation is what the refusal reports.
	res := ReservationFrom(ctx)
	var written []string
	var marked string
	if res != nil {
		cmp, g, op, w, v := res.fence(t)
		cmps = append([]clientv3.Cmp{cmp}, cmps...)
		guards = append([]guard{g}, guards...)
		ops = append(slices.Clip(ops), op)
		written, marked = w, v
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	var rev int64
	switch {
	case err != nil && res != nil:
		// The outcome is unknown (a lost quorum cut the call, etcd's
		// request timed out). The fence's mark tells whether it
		// committed: answering an error for a write that took place
		// would leave the request's answer lost.
		var ok bool
		if rev, ok = res.resolve(ctx, s, marked); !ok {
			return unavailable(err)
		}
	case err != nil:
		return unavailable(err)
	case !resp.Succeeded:
		return s.explain(ctx, guards)
	default:
		rev = resp.Header.Revision
	}
	if res != nil {
		res.committedWith(written, rev)
	}
	for _, e := range t.written {
		e.SetEntityRevision(rev)
	}
	if t.freesTunnelIP {
		s.tunnels.forget()
	}
	return nil
}

// explain finds which guard refused a transaction by reading the guarded keys
// again. If they all pass now, the keys changed back in between; the caller
// sees a plain stale-revision conflict and may retry.
func (s *Store) explain(ctx context.Context, guards []guard) error {
	ops := make([]clientv3.Op, 0, len(guards))
	for _, g := range guards {
		if g.prefix {
			// etcd's count ignores revision filters: count only when any
			// key refutes the guard, else read the (few) keys filtered.
			if g.createRev == 0 {
				ops = append(ops, clientv3.OpGet(g.key, clientv3.WithPrefix(), clientv3.WithCountOnly()))
			} else {
				ops = append(ops, clientv3.OpGet(g.key, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
					clientv3.WithMinCreateRev(g.createRev+1)))
			}
			continue
		}
		ops = append(ops, clientv3.OpGet(g.key))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return unavailable(err)
	}
	for i, g := range guards {
		rr := resp.Responses[i].GetResponseRange()
		kvs := rr.Kvs
		switch {
		case g.byCreate:
			if len(kvs) == 0 || kvs[0].CreateRevision != g.createRev {
				return g.fail
			}
		case g.prefix:
			if rr.Count > 0 && (g.createRev == 0 || len(kvs) > 0) {
				return g.fail
			}
		case g.byLease:
			if len(kvs) == 0 || clientv3.LeaseID(kvs[0].Lease) != g.lease {
				return g.fail
			}
		case g.byMod:
			if len(kvs) == 0 {
				if g.missingFails {
					return g.fail
				}
				return messages.NotFound(singularName(resourceOf(g.key)), lastSegment(g.key))
			}
			if kvs[0].ModRevision != g.modRev {
				return g.fail
			}
		default:
			if len(kvs) != 0 {
				return g.fail
			}
		}
	}
	return messages.ErrStaleRevision
}

// resourceOf is the resource segment of a row key (/otherix/<resource>/<id>).
func resourceOf(key string) string {
	rest := strings.TrimPrefix(key, Root)
	if i := strings.IndexByte(rest, '/'); i > 0 {
		return rest[:i]
	}
	return rest
}

func staleError(resource, id string) error {
	return (&messages.Error{Kind: messages.KindStale, Code: "revision_conflict",
		Message: fmt.Sprintf("%s %s changed since it was read; reload and retry", singularName(resource), id)})
}

// displayValue strips the scope a unique value carries (owner/name) so error
// messages name only what the caller typed.
func displayValue(v string) string { return lastSegment(v) }
