package store

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Replicas is the resource name of otherix-api replicas:
// /otherix/replicas/<name>. The etcd membership is the truth about who
// votes; these rows add what etcd does not hold (API and agent URLs).
const Replicas = "replicas"

// ErrReplicaChanged reports a join whose replica row was written by another
// join (or the replica itself) after it was read.
var ErrReplicaChanged = &messages.Error{Kind: messages.KindConflict, Code: "replica_name_conflict",
	Message: "another join for this replica name was recorded meanwhile"}

// GetReplica loads a replica row by name.
func (s *Store) GetReplica(ctx context.Context, name string) (*messages.Replica, error) {
	r, err := Get[messages.Replica](ctx, s, Replicas, name)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("replica", name)
	}
	return r, err
}

// ListReplicas returns every replica row, by name (a cluster has a handful).
func (s *Store) ListReplicas(ctx context.Context) ([]*messages.Replica, error) {
	var out []*messages.Replica
	page := Page{Limit: 200}
	for {
		rs, next, err := List[messages.Replica](ctx, s, Replicas, page)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
		if next == "" {
			return out, nil
		}
		page.Cursor = next
	}
}

// JoinReplica consumes a replica join token and records the replica in one
// transaction. The token is deleted only if it is still at tokenRev (of two
// joins with one token exactly one commits; the other gets
// ErrJoinTokenConsumed). r.Revision is the revision its row was read at, 0
// when there was none: a row left by a join that failed after this step is
// overwritten by the retry, but two joins racing for one name cannot both
// commit (ErrReplicaChanged).
func (s *Store) JoinReplica(ctx context.Context, tokenID string, tokenRev int64, r *messages.Replica) error {
	t := NewTxn()
	t.requireRevision(RowKey(JoinTokens, tokenID), tokenRev, ErrJoinTokenConsumed)
	t.ops = append(t.ops, clientv3.OpDelete(RowKey(JoinTokens, tokenID)))
	t.RemoveIndex(JoinTokens, JoinTokenAllIndex, tokenID)
	t.requireRevision(RowKey(Replicas, r.Name), r.Revision, ErrReplicaChanged)
	t.put(RowKey(Replicas, r.Name), r)
	err := s.Commit(ctx, t)
	if err == nil {
		return nil
	}
	var me *messages.Error
	if errors.As(err, &me) && me.Code == ErrReplicaChanged.Code {
		return ErrReplicaChanged
	}
	switch messages.KindOf(err) {
	case messages.KindNotFound, messages.KindStale:
		// The token guard is first: a vanished or changed token row.
		return ErrJoinTokenConsumed
	}
	return err
}

// RecordReplica writes a replica's own row (its URLs) when it starts
// serving, whatever was there: the replica is the authority on where it
// listens.
func (s *Store) RecordReplica(ctx context.Context, r *messages.Replica) error {
	v, err := marshalRow(r)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, RowKey(Replicas, r.Name), v); err != nil {
		return fmt.Errorf("record replica %s: %w", r.Name, unavailable(err))
	}
	return nil
}

// DeleteReplica removes a replica row if it is still at the revision it
// was written at (a failed join's own row).
func (s *Store) DeleteReplica(ctx context.Context, r *messages.Replica) error {
	err := s.Commit(ctx, NewTxn().Delete(Replicas, r))
	if messages.KindOf(err) == messages.KindNotFound {
		return nil
	}
	return err
}

// ForgetReplicas deletes the rows of replicas removed from the membership,
// all in one transaction; rows already gone are no error.
func (s *Store) ForgetReplicas(ctx context.Context, names ...string) error {
	if len(names) == 0 {
		return nil
	}
	t := NewTxn()
	for _, n := range names {
		t.DeleteKey(RowKey(Replicas, n))
	}
	return s.Commit(ctx, t)
}

// ServingReplicas returns the rows of the replicas clients and agents may
// fail over to: those whose name is a voting member (a learner serves
// nothing, a removed member nothing either), by name. The membership is
// read from this member's copy, without quorum.
func (s *Store) ServingReplicas(ctx context.Context) ([]*messages.Replica, error) {
	ml, err := s.cli.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("list members: %w", unavailable(err))
	}
	voters := make(map[string]bool, len(ml.Members))
	for _, m := range ml.Members {
		if !m.IsLearner && m.Name != "" {
			voters[m.Name] = true
		}
	}
	rows, err := s.ListReplicas(ctx)
	if err != nil {
		return nil, err
	}
	out := rows[:0]
	for _, r := range rows {
		if voters[r.Name] {
			out = append(out, r)
		}
	}
	return out, nil
}
