package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Audit is the resource name of audit entries: /otherix/audit/<ulid>. The
// ids are ULIDs, so key order is time order and retention deletes a key
// range from the start of the prefix.
const Audit = "audit"

// AppendAudit writes entries, giving each without an id a new one, in as few
// transactions as the op limit allows (one put per entry). Entries are
// write-once: a put never compares, so a retried batch may write an entry
// twice under the same id, never two different entries under one.
func (s *Store) AppendAudit(ctx context.Context, entries []messages.AuditEntry) error {
	for start := 0; start < len(entries); start += s.maxOps {
		chunk := entries[start:min(start+s.maxOps, len(entries))]
		ops := make([]clientv3.Op, 0, len(chunk))
		for i := range chunk {
			e := &chunk[i]
			if e.ID == "" {
				e.ID = messages.NewID()
			}
			b, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("store: encode audit entry: %w", err)
			}
			ops = append(ops, clientv3.OpPut(RowKey(Audit, e.ID), string(b)))
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return unavailable(err)
		}
	}
	return nil
}

// ListAudit returns one page of audit entries, oldest first (key order). An
// entry that does not decode is skipped rather than failing the page: the
// log must stay readable whatever one row holds.
func (s *Store) ListAudit(ctx context.Context, p Page) ([]messages.AuditEntry, string, error) {
	kvs, next, err := s.rangePage(ctx, RowPrefix(Audit), p, false)
	if err != nil {
		return nil, "", err
	}
	out := make([]messages.AuditEntry, 0, len(kvs))
	for _, k := range kvs {
		var e messages.AuditEntry
		if json.Unmarshal(k.value, &e) == nil {
			out = append(out, e)
		}
	}
	return out, next, nil
}

// SweepAudit deletes audit entries whose id was minted before cutoff and
// returns how many it removed. It ranges keys-only from the start of the
// prefix up to the first id of cutoff and deletes them in transactions under
// the op limit, so it never reads the entries it keeps.
func (s *Store) SweepAudit(ctx context.Context, cutoff time.Time) (int, error) {
	prefix := RowPrefix(Audit)
	end := prefix + ulidPrefix(cutoff)
	removed := 0
	for {
		resp, err := s.cli.Get(ctx, prefix, clientv3.WithRange(end), clientv3.WithKeysOnly(),
			clientv3.WithLimit(int64(s.maxOps)))
		if err != nil {
			return removed, unavailable(err)
		}
		if len(resp.Kvs) == 0 {
			return removed, nil
		}
		ops := make([]clientv3.Op, 0, len(resp.Kvs))
		for _, k := range resp.Kvs {
			ops = append(ops, clientv3.OpDelete(string(k.Key)))
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return removed, unavailable(err)
		}
		removed += len(ops)
		if !resp.More {
			return removed, nil
		}
	}
}

// ulidPrefix is the lowest lower-case ULID of time t: its 10-character
// timestamp followed by zero entropy.
func ulidPrefix(t time.Time) string {
	var id ulid.ULID
	_ = id.SetTime(ulid.Timestamp(t))
	return strings.ToLower(id.String())
}
