package store

import (
	"context"
	"encoding/base64"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxPageSize bounds one page of a list.
const MaxPageSize = 200

// DefaultPageSize is the page size when the caller gives none.
const DefaultPageSize = 50

// Page asks for one page of a list. Cursor is opaque: the NextCursor of the
// previous page, or empty for the first.
type Page struct {
	Limit  int
	Cursor string
}

func (p Page) limit() int {
	switch {
	case p.Limit <= 0:
		return DefaultPageSize
	case p.Limit > MaxPageSize:
		return MaxPageSize
	}
	return p.Limit
}

// EncodeCursor makes an opaque cursor from the last id of a page.
func EncodeCursor(lastID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastID))
}

// DecodeCursor reverses EncodeCursor.
func DecodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) == 0 || len(b) > 256 {
		return "", ErrBadCursor
	}
	for _, ch := range b {
		if ch == '/' || ch < 0x20 {
			return "", ErrBadCursor
		}
	}
	return string(b), nil
}

// rangePage reads up to limit keys under prefix after the cursor, and reports
// the cursor of the next page if more keys follow.
func (s *Store) rangePage(ctx context.Context, prefix string, p Page, keysOnly bool) ([]kv, string, error) {
	from := prefix
	if p.Cursor != "" {
		last, err := DecodeCursor(p.Cursor)
		if err != nil {
			return nil, "", err
		}
		from = prefix + last + "\x00"
	}
	limit := p.limit()
	opts := []clientv3.OpOption{clientv3.WithRange(prefixEnd(prefix)), clientv3.WithLimit(int64(limit + 1)),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
	if keysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	rr := readRevisionOf(ctx)
	if rr != nil && rr.rev != 0 {
		opts = append(opts, clientv3.WithRev(rr.rev))
	}
	resp, err := s.cli.Get(ctx, from, opts...)
	if err != nil {
		return nil, "", unavailable(err)
	}
	if rr != nil && rr.rev == 0 {
		rr.rev = resp.Header.Revision
	}
	out := make([]kv, 0, len(resp.Kvs))
	for _, k := range resp.Kvs {
		out = append(out, kv{key: string(k.Key), value: k.Value, modRev: k.ModRevision})
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = EncodeCursor(lastSegment(out[len(out)-1].key))
	}
	return out, next, nil
}

type kv struct {
	key    string
	value  []byte
	modRev int64
}

// List returns one page of a resource's rows in id (creation) order.
func List[T any, PT interface {
	*T
	Entity
}](ctx context.Context, s *Store, resource string, p Page) ([]PT, string, error) {
	kvs, next, err := s.rangePage(ctx, RowPrefix(resource), p, false)
	if err != nil {
		return nil, "", err
	}
	items := make([]PT, 0, len(kvs))
	for _, k := range kvs {
		v, err := decode[T, PT](k.value, k.modRev)
		if err != nil {
			return nil, "", err
		}
		items = append(items, v)
	}
	return items, next, nil
}

// ListIndexedIDs returns one page of the ids listed under an index sort key,
// in id order, without reading the rows: for loops that only need to name
// each entity (the liveness loop asks every node's actor).
func ListIndexedIDs(ctx context.Context, s *Store, resource, sortKey string, p Page) ([]string, string, error) {
	keys, next, err := s.rangePage(ctx, IndexPrefix(resource, sortKey), p, true)
	if err != nil {
		return nil, "", err
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = lastSegment(k.key)
	}
	return ids, next, nil
}

// ListIndexed returns one page of the rows listed under an index sort key, in
// id order. Rows deleted between reading the index and the rows are skipped.
func ListIndexed[T any, PT interface {
	*T
	Entity
}](ctx context.Context, s *Store, resource, sortKey string, p Page) ([]PT, string, error) {
	keys, next, err := s.rangePage(ctx, IndexPrefix(resource, sortKey), p, true)
	if err != nil {
		return nil, "", err
	}
	items := make([]PT, 0, len(keys))
	for start := 0; start < len(keys); start += s.maxOps {
		end := min(start+s.maxOps, len(keys))
		ops := make([]clientv3.Op, 0, end-start)
		var at []clientv3.OpOption
		if rr := readRevisionOf(ctx); rr != nil && rr.rev != 0 {
			// The rows as of the index read: one snapshot, so a watch
			// from this revision repeats nothing and misses nothing.
			at = append(at, clientv3.WithRev(rr.rev))
		}
		for _, k := range keys[start:end] {
			ops = append(ops, clientv3.OpGet(RowKey(resource, lastSegment(k.key)), at...))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, "", unavailable(err)
		}
		for _, r := range resp.Responses {
			for _, row := range r.GetResponseRange().Kvs {
				v, err := decode[T, PT](row.Value, row.ModRevision)
				if err != nil {
					return nil, "", err
				}
				items = append(items, v)
			}
		}
	}
	return items, next, nil
}

// ReadRevision records the etcd revision a list was read at. Every read of
// a list made with its context (the index and the rows) happens at that one
// revision, so the page is a consistent snapshot and a watch started after
// it (GET /v1/watch?since=) sees each later change exactly once.
type ReadRevision struct{ rev int64 }

// Revision is the revision the reads happened at; 0 before the first.
func (r *ReadRevision) Revision() int64 { return r.rev }

type readRevisionKey struct{}

// WithReadRevision returns a context whose list reads are pinned to one
// revision, recorded in the returned ReadRevision. Use it for one request.
func WithReadRevision(ctx context.Context) (context.Context, *ReadRevision) {
	rr := new(ReadRevision)
	return context.WithValue(ctx, readRevisionKey{}, rr), rr
}

func readRevisionOf(ctx context.Context) *ReadRevision {
	rr, _ := ctx.Value(readRevisionKey{}).(*ReadRevision)
	return rr
}
