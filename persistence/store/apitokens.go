package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// APITokens is the resource name of API token rows: /otherix/apitokens/<id>.
const APITokens = "apitokens"

// TokenTouchInterval is how stale LastUsedAt may get before TouchToken
// writes it again: authenticated requests then cost etcd a write at most
// once a minute per token instead of one each.
const TokenTouchInterval = time.Minute

// APITokenOwnerIndex is the index sort key that lists one user's tokens.
func APITokenOwnerIndex(owner string) string { return "owner/" + owner }

// CreateAPIToken adds a new token record to t, indexed under its owner. An
// invalid record (k.Validate) fails the commit.
func CreateAPIToken(t *Txn, k *messages.APIToken) *Txn {
	t.checkIdentity(k.Validate)
	t.Create(APITokens, k)
	t.AddIndex(APITokens, APITokenOwnerIndex(k.Owner), k.ID)
	return t
}

// DeleteAPIToken adds to t the removal of a token and its index key,
// guarded by the revision it was read at.
func DeleteAPIToken(t *Txn, k *messages.APIToken) *Txn {
	t.Delete(APITokens, k)
	t.RemoveIndex(APITokens, APITokenOwnerIndex(k.Owner), k.ID)
	return t
}

// GetAPIToken loads a token record by its public id.
func (s *Store) GetAPIToken(ctx context.Context, id string) (*messages.APIToken, error) {
	k, err := Get[messages.APIToken](ctx, s, APITokens, id)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("api token", id)
	}
	return k, err
}

// ListAPITokens returns one page of an owner's tokens in id order.
func (s *Store) ListAPITokens(ctx context.Context, owner string, p Page) ([]*messages.APIToken, string, error) {
	return ListIndexed[messages.APIToken](ctx, s, APITokens, APITokenOwnerIndex(owner), p)
}

// RevokeAPIToken deletes a token so it is refused from now on. With owner
// set, a token of another owner is reported not found, as if it did not
// exist (DESIGN §6: 404, never 403); owner "" revokes anyone's (admin).
// A concurrent TouchToken only moves the revision, so a conflict is retried.
func (s *Store) RevokeAPIToken(ctx context.Context, id, owner string) error {
	for range casAttempts {
		k, err := s.GetAPIToken(ctx, id)
		if err != nil {
			return err
		}
		if owner != "" && k.Owner != owner {
			return messages.NotFound("api token", id)
		}
		err = s.Commit(ctx, DeleteAPIToken(NewTxn(), k))
		switch messages.KindOf(err) {
		case messages.KindStale:
			continue
		case messages.KindNotFound:
			return messages.NotFound("api token", id)
		}
		if err != nil {
			return fmt.Errorf("revoke api token %s: %w", id, err)
		}
		return nil
	}
	return fmt.Errorf("revoke api token %s: %w", id, messages.ErrStaleRevision)
}

// TouchToken records that a token was used at now, unless it was recorded
// less than TokenTouchInterval before: most requests then only read. It
// reports whether it wrote. Losing a race to another writer is not an error
// (whoever won recorded a use just as recent), nor is a token revoked
// meanwhile.
func (s *Store) TouchToken(ctx context.Context, id string, now time.Time) (bool, error) {
	k, err := s.GetAPIToken(ctx, id)
	if err != nil {
		return false, err
	}
	if k.LastUsedAt != nil && k.LastUsedAt.After(now.Add(-TokenTouchInterval)) {
		return false, nil
	}
	k.LastUsedAt = &now
	err = s.Commit(ctx, NewTxn().Update(APITokens, k))
	switch messages.KindOf(err) {
	case messages.KindStale, messages.KindNotFound:
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("touch api token %s: %w", id, err)
	}
	return true, nil
}

// DeleteOwnerTokens deletes every token of a user (when the user is deleted
// or disabled) in chunked transactions, and returns how many it removed.
func (s *Store) DeleteOwnerTokens(ctx context.Context, owner string) (int, error) {
	return s.Sweep(ctx, IndexPrefix(APITokens, APITokenOwnerIndex(owner)), func(it SweepItem) []clientv3.Op {
		return []clientv3.Op{clientv3.OpDelete(RowKey(APITokens, lastSegment(it.Key))), clientv3.OpDelete(it.Key)}
	})
}
