package store

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// RefreshFamilies is the resource name of refresh-token families (login
// sessions): /otherix/refresh/<family>.
const RefreshFamilies = "refresh"

// RefreshUserIndex is the index sort key that lists one user's families.
func RefreshUserIndex(userID string) string { return "user/" + userID }

// casAttempts bounds the read-modify-write loops below. A family or token
// row is written by one client at a time in practice; repeated conflicts
// mean something is wrong, and the caller sees the conflict.
const casAttempts = 5

// Refresh-token failures. They are plain errors, not domain errors: the HTTP
// layer answers both with the same 401 so a client cannot tell them apart,
// but logs ErrRefreshReuse as likely theft.
var (
	// ErrRefreshInvalid reports a refresh token of an unknown, revoked or
	// expired family, or whose secret matches no hash the family knows.
	ErrRefreshInvalid = errors.New("store: refresh token invalid")
	// ErrRefreshReuse reports a token that was already rotated out: someone
	// holds a copy. The family is revoked by the same write, so the token
	// its legitimate holder has now fails too.
	ErrRefreshReuse = errors.New("store: refresh token reused; family revoked")
	// ErrRefreshRevokedReplay reports a token the family knows (current or
	// rotated out) presented after the family was revoked: a replay of a
	// dead session, possibly by a thief. Nothing changes in the store; the
	// caller logs it as reuse.
	ErrRefreshRevokedReplay = errors.New("store: refresh token of a revoked family replayed")
)

// StartSession records a new refresh family for userID whose first token
// hashes to hash (security.NewRefreshToken gives family and hash), valid for
// ttl from now, with the family indexed under the user.
func (s *Store) StartSession(ctx context.Context, family, userID, hash string, now time.Time, ttl time.Duration) (*messages.RefreshFamily, error) {
	if family == "" || userID == "" || hash == "" || ttl <= 0 {
		return nil, fmt.Errorf("store: start session: family, user, hash and a positive ttl are required")
	}
	f := &messages.RefreshFamily{ID: family, UserID: userID, CurrentHash: hash,
		CreatedAt: now, RotatedAt: now, ExpiresAt: now.Add(ttl)}
	t := NewTxn().Create(RefreshFamilies, f)
	t.AddIndex(RefreshFamilies, RefreshUserIndex(userID), family)
	if err := s.Commit(ctx, t); err != nil {
		return nil, fmt.Errorf("start session: %w", err)
	}
	return f, nil
}

// GetRefreshFamily loads a family; a missing one is ErrRefreshInvalid.
func (s *Store) GetRefreshFamily(ctx context.Context, family string) (*messages.RefreshFamily, error) {
	f, err := Get[messages.RefreshFamily](ctx, s, RefreshFamilies, family)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, ErrRefreshInvalid
	}
	return f, err
}

// RotateRefresh replaces the family's current hash with newHash if
// presentedHash is the current one, and returns the family's user. Every
// outcome is one compare-and-set on the row.
//
// The hash rotated out stays acceptable for grace (zero: not at all): of two
// clients of one session racing to refresh with the same token, the loser
// presents it moments after the winner rotated it, which is no theft. Within
// grace such a hash rotates the family again (the loser gets a new token of
// the same session, and the hash the winner holds gets its own grace); after
// grace it is a reuse like any older hash. A thief replaying within grace is
// therefore not caught at once, but whichever of thief and owner presents a
// token rotated out more than grace ago burns the family, as before.
//
// A presentedHash among the recently rotated-out hashes revokes the family
// with reason "reuse" and returns ErrRefreshReuse together with the family's
// user, so the theft is logged against the right account. A known hash
// (current or previous) of a revoked family returns ErrRefreshRevokedReplay
// with the user and changes nothing. An expired family, or an unknown hash,
// returns ErrRefreshInvalid. An unknown hash does not revoke: the family id is
// not secret, and guessing must not let anyone end other users' sessions.
func (s *Store) RotateRefresh(ctx context.Context, family, presentedHash, newHash string, now time.Time, grace time.Duration) (string, error) {
	if newHash == "" {
		return "", fmt.Errorf("store: rotate refresh: empty new hash")
	}
	for range casAttempts {
		f, err := s.GetRefreshFamily(ctx, family)
		if err != nil {
			return "", err
		}
		if f.Expired(now) {
			return "", ErrRefreshInvalid
		}
		if f.Revoked {
			if hashEqual(f.CurrentHash, presentedHash) || hashIn(f.PreviousHashes, presentedHash) {
				return f.UserID, fmt.Errorf("%w: family %s", ErrRefreshRevokedReplay, family)
			}
			return "", ErrRefreshInvalid
		}
		switch {
		case hashEqual(f.CurrentHash, presentedHash), inGrace(f.Grace, presentedHash, now):
			rotate(f, newHash, now, grace)
			err = s.Commit(ctx, NewTxn().Update(RefreshFamilies, f))
			if err == nil {
				return f.UserID, nil
			}
		case hashIn(f.PreviousHashes, presentedHash):
			revoke(f, messages.RevokedReuse, now)
			err = s.Commit(ctx, NewTxn().Update(RefreshFamilies, f))
			if err == nil {
				return f.UserID, fmt.Errorf("%w: family %s", ErrRefreshReuse, family)
			}
		default:
			return "", ErrRefreshInvalid
		}
		if messages.KindOf(err) != messages.KindStale {
			if messages.KindOf(err) == messages.KindNotFound {
				return "", ErrRefreshInvalid
			}
			return "", fmt.Errorf("rotate refresh: %w", err)
		}
		// Changed since read (a concurrent rotation or revocation): decide
		// again on the row as it is now.
	}
	return "", fmt.Errorf("rotate refresh: %w", messages.ErrStaleRevision)
}

// RevokeFamily ends one session (logout): its tokens are refused from now
// on. The row stays until it expires so a replayed token is still
// recognised. Revoking a revoked family is a no-op that keeps the first
// reason; an unknown one is ErrRefreshInvalid. RevokedAt is the store's clock.
func (s *Store) RevokeFamily(ctx context.Context, family, reason string) error {
	now := s.now()
	for range casAttempts {
		f, err := s.GetRefreshFamily(ctx, family)
		if err != nil {
			return err
		}
		if f.Revoked {
			return nil
		}
		revoke(f, reason, now)
		err = s.Commit(ctx, NewTxn().Update(RefreshFamilies, f))
		switch messages.KindOf(err) {
		case messages.KindStale:
			continue
		case messages.KindNotFound:
			return ErrRefreshInvalid
		}
		if err != nil {
			return fmt.Errorf("revoke refresh family %s: %w", family, err)
		}
		return nil
	}
	return fmt.Errorf("revoke refresh family %s: %w", family, messages.ErrStaleRevision)
}

// RevokeUserSessions revokes every live family of a user (password change,
// disable, delete) and returns how many it revoked. It walks the user's index
// in pages and revokes a batch per transaction under the op limit; a family
// that changed meanwhile is retried alone, so none is missed. A family started
// after the walk passed is not revoked: callers that must stop new logins
// (disable, delete) change the user first.
func (s *Store) RevokeUserSessions(ctx context.Context, userID, reason string) (int, error) {
	now := s.now()
	revoked := 0
	cursor := ""
	for {
		fams, next, err := ListIndexed[messages.RefreshFamily](ctx, s, RefreshFamilies, RefreshUserIndex(userID),
			Page{Limit: MaxPageSize, Cursor: cursor})
		if err != nil {
			return revoked, err
		}
		var batch []*messages.RefreshFamily
		for _, f := range fams {
			if !f.Revoked {
				batch = append(batch, f)
			}
		}
		// Each revocation is one compare and one put.
		for start := 0; start < len(batch); start += s.maxOps {
			chunk := batch[start:min(start+s.maxOps, len(batch))]
			t := NewTxn()
			for _, f := range chunk {
				revoke(f, reason, now)
				t.Update(RefreshFamilies, f)
			}
			err := s.Commit(ctx, t)
			if err == nil {
				revoked += len(chunk)
				continue
			}
			if k := messages.KindOf(err); k != messages.KindStale && k != messages.KindNotFound {
				return revoked, fmt.Errorf("revoke sessions of user %s: %w", userID, err)
			}
			for _, f := range chunk {
				switch err := s.RevokeFamily(ctx, f.ID, reason); {
				case err == nil:
					revoked++
				case errors.Is(err, ErrRefreshInvalid): // deleted by a sweep meanwhile
				default:
					return revoked, fmt.Errorf("revoke sessions of user %s: %w", userID, err)
				}
			}
		}
		if next == "" {
			return revoked, nil
		}
		cursor = next
	}
}

// SweepRefreshFamilies deletes families expired before now, revoked or not,
// with their index keys, and returns how many it removed. After expiry a
// replayed token is refused as unknown, which is all a dead session needs.
func (s *Store) SweepRefreshFamilies(ctx context.Context, now time.Time) (int, error) {
	return s.Sweep(ctx, RowPrefix(RefreshFamilies), func(it SweepItem) []clientv3.Op {
		var f messages.RefreshFamily
		if err := json.Unmarshal(it.Value, &f); err != nil || !f.Expired(now) {
			return nil
		}
		return []clientv3.Op{
			clientv3.OpDelete(it.Key),
			clientv3.OpDelete(IndexKey(RefreshFamilies, RefreshUserIndex(f.UserID), lastSegment(it.Key))),
		}
	})
}

// rotate makes newHash current; the hash it replaces joins the previous
// hashes and, for grace, the grace list.
func rotate(f *messages.RefreshFamily, newHash string, now time.Time, grace time.Duration) {
	var keep []messages.RefreshGrace
	for _, g := range f.Grace {
		if now.Before(g.Until) {
			keep = append(keep, g)
		}
	}
	if grace > 0 {
		keep = append([]messages.RefreshGrace{{Hash: f.CurrentHash, Until: now.Add(grace)}}, keep...)
	}
	if len(keep) > messages.MaxGraceHashes {
		keep = keep[:messages.MaxGraceHashes]
	}
	f.Grace = keep
	f.PreviousHashes = append([]string{f.CurrentHash}, f.PreviousHashes...)
	if len(f.PreviousHashes) > messages.MaxPreviousHashes {
		f.PreviousHashes = f.PreviousHashes[:messages.MaxPreviousHashes]
	}
	f.CurrentHash = newHash
	f.Generation++
	f.RotatedAt = now
}

// inGrace reports whether presented is a grace hash still valid at now.
func inGrace(gs []messages.RefreshGrace, presented string, now time.Time) bool {
	found := false
	for _, g := range gs {
		found = (hashEqual(g.Hash, presented) && now.Before(g.Until)) || found
	}
	return found
}

func revoke(f *messages.RefreshFamily, reason string, now time.Time) {
	f.Grace = nil
	f.Revoked = true
	f.RevokedReason = reason
	f.RevokedAt = &now
}

// hashEqual compares two token hashes in constant time. The hashes are not
// secrets, but comparing them in constant time costs nothing and leaves no
// timing signal for anyone to reason about.
func hashEqual(stored, presented string) bool {
	return stored != "" && subtle.ConstantTimeCompare([]byte(stored), []byte(presented)) == 1
}

func hashIn(hashes []string, presented string) bool {
	found := false
	for _, h := range hashes {
		// No early return: every hash is compared whatever matches.
		found = hashEqual(h, presented) || found
	}
	return found
}
