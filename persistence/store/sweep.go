package store

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SweepItem is one row a sweep visits.
type SweepItem struct {
	Key         string
	Value       []byte
	ModRevision int64
}

// SweepPlan decides what to do with one row: the ops to apply atomically with
// a check that the row is unchanged since it was read, or nil to leave it.
type SweepPlan func(item SweepItem) []clientv3.Op

// Sweep visits every key under prefix in pages and applies the plan's ops. The
// ops of many rows are packed into transactions under the op limit; each row's
// ops stay together and are guarded by the row's mod revision, so a row that
// changed during the sweep is left alone. It returns how many rows it changed.
func (s *Store) Sweep(ctx context.Context, prefix string, plan SweepPlan) (int, error) {
	changed := 0
	cursor := ""
	for {
		kvs, next, err := s.rangePage(ctx, prefix, Page{Limit: MaxPageSize, Cursor: cursor}, false)
		if err != nil {
			return changed, err
		}
		var batch []group
		batchOps := 0
		for _, k := range kvs {
			ops := plan(SweepItem{Key: k.key, Value: k.value, ModRevision: k.modRev})
			if len(ops) == 0 {
				continue
			}
			if len(ops) > s.maxOps {
				return changed, ErrTooManyOps
			}
			if batchOps+len(ops) > s.maxOps || len(batch)+1 > s.maxOps {
				n, err := s.applyGroups(ctx, batch)
				changed += n
				if err != nil {
					return changed, err
				}
				batch, batchOps = nil, 0
			}
			batch = append(batch, group{cmp: clientv3.Compare(clientv3.ModRevision(k.key), "=", k.modRev), ops: ops})
			batchOps += len(ops)
		}
		n, err := s.applyGroups(ctx, batch)
		changed += n
		if err != nil {
			return changed, err
		}
		if next == "" {
			return changed, nil
		}
		cursor = next
	}
}

type group struct {
	cmp clientv3.Cmp
	ops []clientv3.Op
}

// applyGroups commits groups in one transaction; if any row changed meanwhile
// the whole transaction is refused, and the groups are retried one by one so
// that only the changed rows are skipped.
func (s *Store) applyGroups(ctx context.Context, groups []group) (int, error) {
	if len(groups) == 0 {
		return 0, nil
	}
	cmps := make([]clientv3.Cmp, 0, len(groups))
	var ops []clientv3.Op
	for _, g := range groups {
		cmps = append(cmps, g.cmp)
		ops = append(ops, g.ops...)
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, unavailable(err)
	}
	if resp.Succeeded {
		return len(groups), nil
	}
	n := 0
	for _, g := range groups {
		resp, err := s.cli.Txn(ctx).If(g.cmp).Then(g.ops...).Commit()
		if err != nil {
			return n, unavailable(err)
		}
		if resp.Succeeded {
			n++
		}
	}
	return n, nil
}
