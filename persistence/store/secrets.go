package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/security"
)

// JWTKeyRingKey holds the access-token signing keys, shared by every replica
// so a token issued by one verifies on all.
//
// The value contains secret key bytes in the clear. That is acceptable only
// because the etcd data dir is created 0700 and owned by the API's user, and
// snapshots are written to a directory with the same mode; anyone who can
// read either can mint tokens for any user.
const JWTKeyRingKey = Root + "secrets/jwt"

// minSecretLen is the shortest signing secret a stored ring may hold; it
// matches what security.KeyRing.Issue accepts.
const minSecretLen = 32

// ErrNoKeyRing reports a rotation before any key ring was created.
var ErrNoKeyRing = errors.New("store: jwt key ring missing")

// keyRingRow is the stored form of a security.KeyRing. It is spelled out
// here, not taken from security's field names, so a rename there cannot
// silently make every stored ring unreadable.
type keyRingRow struct {
	Current  signingKeyRow   `json:"current"`
	Previous []signingKeyRow `json:"previous,omitempty"`
}

type signingKeyRow struct {
	ID        string    `json:"id"`
	Secret    []byte    `json:"secret"` // base64 in JSON
	CreatedAt time.Time `json:"created_at"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
}

func toKeyRow(k security.SigningKey) signingKeyRow {
	return signingKeyRow{ID: k.ID, Secret: k.Secret, CreatedAt: k.CreatedAt, RetiredAt: k.RetiredAt}
}

func (r signingKeyRow) key() security.SigningKey {
	return security.SigningKey{ID: r.ID, Secret: r.Secret, CreatedAt: r.CreatedAt, RetiredAt: r.RetiredAt}
}

func encodeKeyRing(ring security.KeyRing) (string, error) {
	row := keyRingRow{Current: toKeyRow(ring.Current)}
	for _, k := range ring.Previous {
		row.Previous = append(row.Previous, toKeyRow(k))
	}
	b, err := json.Marshal(row)
	if err != nil {
		return "", fmt.Errorf("store: encode key ring: %w", err)
	}
	return string(b), nil
}

// decodeKeyRing refuses a ring whose current key cannot sign, so a damaged
// row fails at load instead of at the first login.
func decodeKeyRing(data []byte) (security.KeyRing, error) {
	var row keyRingRow
	if err := json.Unmarshal(data, &row); err != nil {
		return security.KeyRing{}, fmt.Errorf("%w: jwt key ring: %v", ErrCorruptRow, err)
	}
	if row.Current.ID == "" || len(row.Current.Secret) < minSecretLen {
		return security.KeyRing{}, fmt.Errorf("%w: jwt key ring: current key without id or too short", ErrCorruptRow)
	}
	ring := security.KeyRing{Current: row.Current.key()}
	for _, k := range row.Previous {
		ring.Previous = append(ring.Previous, k.key())
	}
	return ring, nil
}

// LoadOrCreateKeyRing returns the cluster's key ring and its revision,
// creating it at first boot. Creation is a create-if-absent transaction, so
// replicas booting together all end up with the one ring that won.
func (s *Store) LoadOrCreateKeyRing(ctx context.Context, now time.Time) (security.KeyRing, int64, error) {
	// Read first, as SeedSettings does: a full store must still boot.
	ring, rev, err := s.KeyRing(ctx)
	if err == nil || !errors.Is(err, ErrNoKeyRing) {
		return ring, rev, err
	}
	fresh := security.NewKeyRing(now)
	v, err := encodeKeyRing(fresh)
	if err != nil {
		return security.KeyRing{}, 0, err
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(JWTKeyRingKey), "=", 0)).
		Then(clientv3.OpPut(JWTKeyRingKey, v)).
		Else(clientv3.OpGet(JWTKeyRingKey)).Commit()
	if err != nil {
		return security.KeyRing{}, 0, unavailable(err)
	}
	if resp.Succeeded {
		return fresh, resp.Header.Revision, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		// Only a deliberate delete between compare and get could do this.
		return security.KeyRing{}, 0, fmt.Errorf("%w: vanished while loading", ErrNoKeyRing)
	}
	ring, err = decodeKeyRing(kvs[0].Value)
	return ring, kvs[0].ModRevision, err
}

// KeyRing reads the cluster's key ring and its revision, for replicas that
// refresh their copy after another one rotated.
func (s *Store) KeyRing(ctx context.Context) (security.KeyRing, int64, error) {
	resp, err := s.cli.Get(ctx, JWTKeyRingKey)
	if err != nil {
		return security.KeyRing{}, 0, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return security.KeyRing{}, 0, ErrNoKeyRing
	}
	ring, err := decodeKeyRing(resp.Kvs[0].Value)
	return ring, resp.Kvs[0].ModRevision, err
}

// RotateKeyRing replaces the current signing key with a new one, keeping the
// old key to verify the tokens it signed (security.KeyRing.Rotate). The
// write is a compare-and-set on the revision read: if another replica
// rotated in between, this rotation is dropped and the winner's ring is
// returned, so simultaneous rotations retire one key, not two.
func (s *Store) RotateKeyRing(ctx context.Context, now time.Time) (security.KeyRing, int64, error) {
	ring, rev, err := s.KeyRing(ctx)
	if err != nil {
		return security.KeyRing{}, 0, err
	}
	next := ring.Rotate(now)
	v, err := encodeKeyRing(next)
	if err != nil {
		return security.KeyRing{}, 0, err
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(JWTKeyRingKey), "=", rev)).
		Then(clientv3.OpPut(JWTKeyRingKey, v)).
		Else(clientv3.OpGet(JWTKeyRingKey)).Commit()
	if err != nil {
		return security.KeyRing{}, 0, unavailable(err)
	}
	if resp.Succeeded {
		return next, resp.Header.Revision, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return security.KeyRing{}, 0, ErrNoKeyRing
	}
	won, err := decodeKeyRing(kvs[0].Value)
	return won, kvs[0].ModRevision, err
}
