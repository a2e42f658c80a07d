package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// IdempotencyRecord is what the API remembers of a write sent with an
// Idempotency-Key: the request's fingerprint and, once done, its answer.
type IdempotencyRecord struct {
	RequestHash string            `json:"request_hash"`
	Done        bool              `json:"done"`
	Status      int               `json:"status,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Body        []byte            `json:"body,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
	revision    int64
}

func idempotencyKey(scope, key string) string {
	sum := sha256.Sum256([]byte(scope + "\x00" + key))
	return Root + idempotency + "/" + hex.EncodeToString(sum[:])
}

// ReserveIdempotency records that a request with this key is in progress. If
// the key was seen before, it returns the earlier record and reserved=false.
// A reservation older than stale whose request never finished (the replica
// died) is taken over.
func (s *Store) ReserveIdempotency(ctx context.Context, scope, key, requestHash string, stale time.Duration) (prior *IdempotencyRecord, reserved bool, err error) {
	k := idempotencyKey(scope, key)
	rec := IdempotencyRecord{RequestHash: requestHash, CreatedAt: s.now()}
	b, _ := json.Marshal(rec)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b))).
		Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return nil, false, unavailable(err)
	}
	if resp.Succeeded {
		return nil, true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, false, fmt.Errorf("store: idempotency record vanished during reservation")
	}
	old, err := decodeIdempotency(kvs[0])
	if err != nil {
		return nil, false, err
	}
	if !old.Done && old.RequestHash == requestHash && s.now().Sub(old.CreatedAt) > stale {
		take, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(k), "=", old.revision)).
			Then(clientv3.OpPut(k, string(b))).Commit()
		if err != nil {
			return nil, false, unavailable(err)
		}
		if take.Succeeded {
			return nil, true, nil
		}
	}
	return old, false, nil
}

func decodeIdempotency(kv *mvccpb.KeyValue) (*IdempotencyRecord, error) {
	var rec IdempotencyRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return nil, fmt.Errorf("%w: idempotency record: %v", ErrCorruptRow, err)
	}
	rec.revision = kv.ModRevision
	return &rec, nil
}

// ReplaceIdempotency reserves a key whose earlier record the caller found
// expired, but only if that record is still there unchanged: of two retries
// racing to replace it, one wins and the other sees the winner's reservation.
func (s *Store) ReplaceIdempotency(ctx context.Context, scope, key, requestHash string, expired *IdempotencyRecord) (*IdempotencyRecord, bool, error) {
	k := idempotencyKey(scope, key)
	b, _ := json.Marshal(IdempotencyRecord{RequestHash: requestHash, CreatedAt: s.now()})
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", expired.revision)).
		Then(clientv3.OpPut(k, string(b))).
		Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return nil, false, unavailable(err)
	}
	if resp.Succeeded {
		return nil, true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		// Removed meanwhile (a sweep): an ordinary reservation will do.
		return s.ReserveIdempotency(ctx, scope, key, requestHash, time.Hour)
	}
	cur, err := decodeIdempotency(kvs[0])
	return cur, false, err
}

// CompleteIdempotency stores the answer to a reserved request. It is a plain
// write: if a stale reservation was taken over meanwhile, the taker sent the
// same request (takeover requires the same fingerprint), so either answer is
// the answer to that request.
func (s *Store) CompleteIdempotency(ctx context.Context, scope, key string, rec IdempotencyRecord) error {
	rec.Done = true
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("store: encode idempotency record: %w", err)
	}
	if _, err := s.cli.Put(ctx, idempotencyKey(scope, key), string(b)); err != nil {
		return unavailable(err)
	}
	return nil
}

// ReleaseIdempotency forgets a reservation whose request failed before it
// changed anything, so the client may retry with the same key.
func (s *Store) ReleaseIdempotency(ctx context.Context, scope, key string) error {
	if _, err := s.cli.Delete(ctx, idempotencyKey(scope, key)); err != nil {
		return unavailable(err)
	}
	return nil
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
