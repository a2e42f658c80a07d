// Package schema versions the format of what the control plane keeps in
// etcd, as one number for the whole store at /otherix/schema. A binary
// reads and writes exactly its Current version: at start it migrates older
// data up to it (each migration idempotent and chunked, so a replica that
// dies halfway, or two replicas starting at once, leave nothing wrong) and
// refuses newer data without touching it. A running replica that sees the
// version pass its own (a newer replica migrated the data under it) stops
// serving rather than misread what it no longer understands.
package schema

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key holds the store's version document.
const Key = "/otherix/schema"

// root is every key the control plane writes; a store with none is new.
const root = "/otherix/"

// Current is the version this binary reads and writes.
//
//	0  data written before versions existed (no document)
//	1  the first versioned format; the same documents as 0
const Current = 1

// Document is what Key holds.
type Document struct {
	Version int `json:"version"`
	// WrittenBy is the binary and version that last set it, for the
	// message an older binary prints when it refuses the store.
	WrittenBy string    `json:"written_by"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Migration moves the store from version To-1 to To. Run must be
// idempotent (it may run again after a crash, or on two replicas at once)
// and keep each transaction within etcd's operation limit; nil changes no
// document.
type Migration struct {
	To   int
	Name string
	Run  func(ctx context.Context, cli *clientv3.Client) error
}

// Migrations are this binary's, in order; the last one's To is Current.
var Migrations = []Migration{
	{To: 1, Name: "stamp the first versioned format (no document changes)"},
}

// TooNewError refuses a store written by a newer control plane.
type TooNewError struct {
	Stored, Supported int
	WrittenBy         string
}

func (e *TooNewError) Error() string {
	return fmt.Sprintf("the store holds data format %d (written by %s); this otherix-api reads format %d at most: "+
		"run the newer otherix-api, or restore a backup taken before the upgrade into a new data dir (otherix-api restore); "+
		"nothing was changed", e.Stored, e.WrittenBy, e.Supported)
}

// Read returns the stored document, with Version 0 when there is none,
// and whether the store holds any data at all.
func Read(ctx context.Context, cli *clientv3.Client) (doc Document, empty bool, err error) {
	resp, err := cli.Get(ctx, Key)
	if err != nil {
		return Document{}, false, fmt.Errorf("schema: read: %w", err)
	}
	if len(resp.Kvs) == 1 {
		if err := json.Unmarshal(resp.Kvs[0].Value, &doc); err != nil {
			return Document{}, false, fmt.Errorf("schema: decode %s: %w", Key, err)
		}
		return doc, false, nil
	}
	any, err := cli.Get(ctx, root, clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithLimit(1))
	if err != nil {
		return Document{}, false, fmt.Errorf("schema: read: %w", err)
	}
	return Document{}, any.Count == 0, nil
}

// Ensure brings the store to Current: a new store is stamped, an older one
// migrated step by step, a newer one refused with a *TooNewError. writer
// names this binary ("otherix-api 1.4.0"). It reads before it writes, so a
// store at Current costs one read and writes nothing.
func Ensure(ctx context.Context, cli *clientv3.Client, writer string, log *slog.Logger) error {
	return ensure(ctx, cli, Current, Migrations, writer, time.Now, log)
}

func ensure(ctx context.Context, cli *clientv3.Client, current int, migs []Migration, writer string,
	now func() time.Time, log *slog.Logger) error {
	doc, empty, err := Read(ctx, cli)
	if err != nil {
		return err
	}
	switch {
	case doc.Version > current:
		return &TooNewError{Stored: doc.Version, Supported: current, WrittenBy: doc.WrittenBy}
	case doc.Version == current:
		return nil
	case empty:
		// Nothing to migrate: a new store starts at the current format.
		return bump(ctx, cli, doc.Version, current, writer, now)
	}
	for _, m := range migs {
		if m.To <= doc.Version {
			continue
		}
		if m.To > current {
			break
		}
		start := time.Now()
		if m.Run != nil {
			if err := m.Run(ctx, cli); err != nil {
				return fmt.Errorf("schema: migration to %d (%s): %w", m.To, m.Name, err)
			}
		}
		if err := bump(ctx, cli, m.To-1, m.To, writer, now); err != nil {
			if m.Run == nil && (errors.Is(err, rpctypes.ErrNoSpace) || errors.Is(err, rpctypes.ErrGRPCNoSpace)) {
				// A full store must still boot so its space can be freed
				// (docs/operations.md); this step changes no document, so
				// the data is already in the new format and the stamp
				// waits for the next start.
				log.Warn("store full: data format stamp deferred to the next start", "to", m.To)
				continue
			}
			return err
		}
		log.Info("store migrated", "to", m.To, "migration", m.Name, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// bump moves the document from version from to to, unless another replica
// got there first (the migrations are idempotent, so that is fine) or went
// past it (then this binary is the older one, and refuses).
func bump(ctx context.Context, cli *clientv3.Client, from, to int, writer string, now func() time.Time) error {
	b, err := json.Marshal(Document{Version: to, WrittenBy: writer, UpdatedAt: now().UTC()})
	if err != nil {
		return err
	}
	resp, err := cli.Get(ctx, Key)
	if err != nil {
		return fmt.Errorf("schema: read: %w", err)
	}
	cmp := clientv3.Compare(clientv3.CreateRevision(Key), "=", 0)
	if len(resp.Kvs) == 1 {
		var cur Document
		if err := json.Unmarshal(resp.Kvs[0].Value, &cur); err != nil {
			return fmt.Errorf("schema: decode %s: %w", Key, err)
		}
		if cur.Version >= to {
			if cur.Version > to {
				return &TooNewError{Stored: cur.Version, Supported: to, WrittenBy: cur.WrittenBy}
			}
			return nil
		}
		if cur.Version != from {
			return fmt.Errorf("schema: store at version %d, expected %d", cur.Version, from)
		}
		cmp = clientv3.Compare(clientv3.ModRevision(Key), "=", resp.Kvs[0].ModRevision)
	}
	txn, err := cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(Key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("schema: write: %w", err)
	}
	if !txn.Succeeded {
		// Another replica moved it meanwhile: judge again from what it wrote.
		return bump(ctx, cli, from, to, writer, now)
	}
	return nil
}

// WatchNewer blocks until the stored version passes current (a newer
// replica migrated the store) and returns a *TooNewError then, or ctx's
// error when it ends first.
func WatchNewer(ctx context.Context, cli *clientv3.Client) error {
	return watchNewer(ctx, cli, Current)
}

func watchNewer(ctx context.Context, cli *clientv3.Client, current int) error {
	for {
		resp, err := cli.Get(ctx, Key)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// No quorum for a while: try again, the watch is not urgent.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			continue
		}
		if err := tooNew(resp.Kvs, current); err != nil {
			return err
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := cli.Watch(wctx, Key, clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wch {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if err := tooNew([]*mvccpb.KeyValue{ev.Kv}, current); err != nil {
					cancel()
					return err
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func tooNew(kvs []*mvccpb.KeyValue, current int) error {
	for _, kv := range kvs {
		if kv == nil || len(kv.Value) == 0 {
			continue
		}
		var doc Document
		if err := json.Unmarshal(kv.Value, &doc); err != nil {
			continue
		}
		if doc.Version > current {
			return &TooNewError{Stored: doc.Version, Supported: current, WrittenBy: doc.WrittenBy}
		}
	}
	return nil
}

// IsTooNew reports whether err refuses a newer store.
func IsTooNew(err error) bool {
	var e *TooNewError
	return errors.As(err, &e)
}
