package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// JoinTokens is the resource name of node join tokens: /otherix/jointokens/<id>.
const JoinTokens = "jointokens"

// JoinTokenAllIndex is the index sort key that lists every join token.
const JoinTokenAllIndex = "all"

// ErrJoinTokenConsumed reports an enrollment whose join token was used,
// revoked or swept after it was read: the token guard refused the commit.
var ErrJoinTokenConsumed = &messages.Error{Kind: messages.KindConflict, Code: "join_token_consumed",
	Message: "the join token was used or revoked meanwhile"}

// CreateJoinToken adds a new join token to t with its index key.
func CreateJoinToken(t *Txn, j *messages.JoinToken) *Txn {
	t.Create(JoinTokens, j)
	t.AddIndex(JoinTokens, JoinTokenAllIndex, j.ID)
	return t
}

// DeleteJoinToken adds to t the removal of a join token and its index key,
// guarded by the revision it was read at.
func DeleteJoinToken(t *Txn, j *messages.JoinToken) *Txn {
	t.Delete(JoinTokens, j)
	t.RemoveIndex(JoinTokens, JoinTokenAllIndex, j.ID)
	return t
}

// GetJoinToken loads a join token by its public id.
func (s *Store) GetJoinToken(ctx context.Context, id string) (*messages.JoinToken, error) {
	j, err := Get[messages.JoinToken](ctx, s, JoinTokens, id)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("join token", id)
	}
	return j, err
}

// ListJoinTokens returns one page of join tokens in id order.
func (s *Store) ListJoinTokens(ctx context.Context, p Page) ([]*messages.JoinToken, string, error) {
	return ListIndexed[messages.JoinToken](ctx, s, JoinTokens, JoinTokenAllIndex, p)
}

// RevokeJoinToken deletes a join token so it can no longer enroll a node.
func (s *Store) RevokeJoinToken(ctx context.Context, id string) error {
	for range casAttempts {
		j, err := s.GetJoinToken(ctx, id)
		if err != nil {
			return err
		}
		err = s.Commit(ctx, DeleteJoinToken(NewTxn(), j))
		switch messages.KindOf(err) {
		case messages.KindStale:
			continue
		case messages.KindNotFound:
			return messages.NotFound("join token", id)
		}
		if err != nil {
			return fmt.Errorf("revoke join token %s: %w", id, err)
		}
		return nil
	}
	return fmt.Errorf("revoke join token %s: %w", id, messages.ErrStaleRevision)
}

// Enroll consumes a join token and records a node in one transaction: the
// token is deleted only if it is still at tokenRev, so of two enrollments
// with one token exactly one commits; the other gets ErrJoinTokenConsumed.
// A taken name fails with node_name_conflict and leaves the token unused.
func (s *Store) Enroll(ctx context.Context, tokenID string, tokenRev int64, node *messages.Node) error {
	t := NewTxn()
	// The token guard comes first, so a lost race is reported as such even
	// when the winner took the same name.
	t.requireRevision(RowKey(JoinTokens, tokenID), tokenRev, ErrJoinTokenConsumed)
	t.ops = append(t.ops, clientv3.OpDelete(RowKey(JoinTokens, tokenID)))
	t.RemoveIndex(JoinTokens, JoinTokenAllIndex, tokenID)
	CreateNode(t, node)
	err := s.Commit(ctx, t)
	if messages.KindOf(err) == messages.KindNotFound {
		// explain reports a vanished guarded row as not found: the token
		// was consumed, revoked or swept meanwhile.
		return ErrJoinTokenConsumed
	}
	return err
}

// SweepJoinTokens deletes join tokens that expired before now, with their
// index keys, and returns how many it removed.
func (s *Store) SweepJoinTokens(ctx context.Context, now time.Time) (int, error) {
	return s.Sweep(ctx, RowPrefix(JoinTokens), func(it SweepItem) []clientv3.Op {
		var j messages.JoinToken
		if err := json.Unmarshal(it.Value, &j); err != nil || now.Before(j.ExpiresAt) {
			return nil
		}
		return []clientv3.Op{
			clientv3.OpDelete(it.Key),
			clientv3.OpDelete(IndexKey(JoinTokens, JoinTokenAllIndex, lastSegment(it.Key))),
		}
	})
}
