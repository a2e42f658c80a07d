package store

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// consoleTokens is where console tokens wait to be used:
// /otherix/consoletokens/<id>, each under its own lease of the token's TTL so
// that an unused token vanishes by itself (no sweep) and any replica can
// serve the WebSocket that consumes it.
const consoleTokens = "consoletokens"

// ConsoleTokenRecord is what a console token grants, stored under the
// token's public id. The secret itself is never stored, only its hash.
type ConsoleTokenRecord struct {
	// Hash is security.HashToken of the token's secret.
	Hash string `json:"hash"`
	// User is who asked for the token; Scope is the owner scope it was
	// issued under (the user's id for "own" scope, "" for "any").
	User  string `json:"user"`
	Scope string `json:"scope"`
	// VM is the id of the VM the token opens.
	VM    string `json:"vm"`
	Mode  string `json:"mode"`
	Force bool   `json:"force,omitempty"`
	// ExpiresAt is checked too: a lease may outlive its TTL by a little.
	ExpiresAt time.Time `json:"expires_at"`
}

// ErrConsoleTokenInvalid answers every token that cannot be used: unknown,
// garbled, expired, already used. The reasons are not told apart, so a
// caller learns nothing from probing.
var ErrConsoleTokenInvalid = &messages.Error{Kind: messages.KindUnauthenticated, Code: "console_token_invalid",
	Message: "the console token is invalid, expired or already used; ask for a new one"}

// PutConsoleToken stores a console token under id for ttl, on a lease of its
// own (rounded up to whole seconds, as etcd counts).
func (s *Store) PutConsoleToken(ctx context.Context, id string, rec ConsoleTokenRecord, ttl time.Duration) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode console token: %w", err)
	}
	lease, err := s.cli.Grant(ctx, int64(math.Ceil(ttl.Seconds())))
	if err != nil {
		return unavailable(err)
	}
	// Create only: an id collision (≈71 random bits) must not replace a
	// token someone holds.
	key := RowKey(consoleTokens, id)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b), clientv3.WithLease(lease.ID))).
		Commit()
	if err != nil {
		return unavailable(err)
	}
	if !resp.Succeeded {
		return messages.Errorf(messages.KindConflict, "console_token_conflict", "console token id %s is taken", id)
	}
	return nil
}

// ConsumeConsoleToken returns the record of token id if secretHash matches,
// it was issued for vmID and it has not expired, deleting it in a
// compare-and-delete transaction: of two uses of one token exactly one
// succeeds. A token presented for another VM is burnt (whoever holds it
// misuses it). Anything else is ErrConsoleTokenInvalid.
func (s *Store) ConsumeConsoleToken(ctx context.Context, id, secretHash, vmID string) (*ConsoleTokenRecord, error) {
	key := RowKey(consoleTokens, id)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrConsoleTokenInvalid
	}
	kv := resp.Kvs[0]
	var rec ConsoleTokenRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return nil, fmt.Errorf("decode console token %s: %w", id, err)
	}
	if subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(secretHash)) != 1 {
		// A wrong secret leaves the token for its holder.
		return nil, ErrConsoleTokenInvalid
	}
	del, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return nil, unavailable(err)
	}
	if !del.Succeeded {
		return nil, ErrConsoleTokenInvalid // used meanwhile
	}
	// The lease has nothing left to guard; let it go (best effort: it
	// expires anyway).
	if kv.Lease != 0 {
		_, _ = s.cli.Revoke(ctx, clientv3.LeaseID(kv.Lease))
	}
	if rec.VM != vmID || !s.now().Before(rec.ExpiresAt) {
		return nil, ErrConsoleTokenInvalid
	}
	return &rec, nil
}
