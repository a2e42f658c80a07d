package enrollment

import (
	"context"
	"strings"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// Join token lifetimes.
const (
	DefaultJoinTokenTTL = time.Hour
	MaxJoinTokenTTL     = 24 * time.Hour
)

// CreateJoinToken creates a one-time node join token and returns it in
// plaintext, the only time it is shown. Only its hash is stored.
func (s *Service) CreateJoinToken(ctx context.Context, p messages.Principal, req messages.CreateJoinTokenRequest) (*messages.CreatedJoinToken, error) {
	ttl, err := joinTokenTTL(req.TTL)
	if err != nil {
		return nil, err
	}
	if req.NodeName != "" {
		if err := messages.ValidateName("node_name", req.NodeName); err != nil {
			return nil, err
		}
	}
	token, id, hash, err := security.NewJoinToken(s.cfg.CA.Fingerprint())
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	j := &messages.JoinToken{ID: id, Hash: hash, Kind: messages.JoinTokenKindNode, NodeName: req.NodeName, CreatedBy: p.UserID,
		CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := s.cfg.Store.Commit(ctx, store.CreateJoinToken(store.NewTxn(), j)); err != nil {
		return nil, err
	}
	s.cfg.Audit(messages.AuditEntry{Actor: p.UserID, Action: "node.join_token.create", Target: id, Result: "ok"})
	return &messages.CreatedJoinToken{Token: token, JoinToken: joinTokenView(j)}, nil
}

// CreateClusterJoinToken creates a one-time replica join token
// (otxr_<id>.<secret>@<ca fingerprint>) and returns it in plaintext, the
// only time it is shown. It is stored like a node join token, with its kind.
func (s *Service) CreateClusterJoinToken(ctx context.Context, p messages.Principal, req messages.CreateClusterJoinTokenRequest) (*messages.CreatedJoinToken, error) {
	if req.Kind != messages.JoinTokenKindReplica {
		return nil, &messages.Error{Kind: messages.KindInvalid, Code: "invalid_kind",
			Message: `kind: must be "replica" (node join tokens are created with POST /v1/nodes/join-tokens)`,
			Details: map[string]any{"field": "kind"}}
	}
	ttl, err := joinTokenTTL(req.TTL)
	if err != nil {
		return nil, err
	}
	token, id, hash, err := security.NewReplicaJoinToken(s.cfg.CA.Fingerprint())
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	j := &messages.JoinToken{ID: id, Hash: hash, Kind: messages.JoinTokenKindReplica, CreatedBy: p.UserID,
		CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := s.cfg.Store.Commit(ctx, store.CreateJoinToken(store.NewTxn(), j)); err != nil {
		return nil, err
	}
	s.cfg.Audit(messages.AuditEntry{Actor: p.UserID, Action: "replica.join_token.create", Target: id, Result: "ok"})
	return &messages.CreatedJoinToken{Token: token, JoinToken: joinTokenView(j)}, nil
}

// joinTokenTTL parses a join token lifetime ("" is the default).
func joinTokenTTL(s string) (time.Duration, error) {
	if s == "" {
		return DefaultJoinTokenTTL, nil
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, invalidTTL("not a duration such as 1h")
	case d <= 0:
		return 0, invalidTTL("must be positive")
	case d > MaxJoinTokenTTL:
		return 0, invalidTTL("must be at most 24h")
	}
	return d, nil
}

// kindOf is a stored token's kind; rows from before replica tokens have none.
func kindOf(j *messages.JoinToken) string {
	if j.Kind == "" {
		return messages.JoinTokenKindNode
	}
	return j.Kind
}

func joinTokenView(j *messages.JoinToken) messages.JoinTokenView {
	return messages.JoinTokenView{ID: j.ID, Kind: kindOf(j), NodeName: j.NodeName, CreatedBy: j.CreatedBy,
		CreatedAt: j.CreatedAt, ExpiresAt: j.ExpiresAt}
}

// ListJoinTokens lists join tokens not yet used, revoked or swept (expired
// ones stay listed until SweepJoinTokens removes them).
func (s *Service) ListJoinTokens(ctx context.Context, page store.Page) ([]messages.JoinTokenView, string, error) {
	js, next, err := s.cfg.Store.ListJoinTokens(ctx, page)
	if err != nil {
		return nil, "", err
	}
	out := make([]messages.JoinTokenView, 0, len(js))
	for _, j := range js {
		out = append(out, joinTokenView(j))
	}
	return out, next, nil
}

// RevokeJoinToken deletes a join token; an unknown id is not found.
func (s *Service) RevokeJoinToken(ctx context.Context, id string) error {
	if len(id) != security.TokenIDLen || strings.ContainsAny(id, "/\x00") {
		return messages.NotFound("join token", id)
	}
	return s.cfg.Store.RevokeJoinToken(ctx, id)
}

// SweepJoinTokens removes expired join tokens (part of the cleanup loop).
func (s *Service) SweepJoinTokens(ctx context.Context) error {
	n, err := s.cfg.Store.SweepJoinTokens(ctx, s.cfg.Store.Now())
	if n > 0 {
		s.cfg.Log.Info("join token cleanup", "expired", n)
	}
	return err
}

// redeem checks a parsed join token against its stored row: it must pin
// this cluster's CA, exist (not used, revoked or swept), be of kind, carry the secret
// whose hash is stored, and not have expired at now. It does not consume the
// token: the caller does, in the transaction that acts on it. A refusal
// returns the reason to log and audit, with errInvalidJoinToken; any other
// error is the store's.
func (s *Service) redeem(ctx context.Context, tok security.JoinToken, kind string, now time.Time) (j *messages.JoinToken, reason string, err error) {
	if tok.CAFingerprint != s.cfg.CA.Fingerprint() {
		return nil, "wrong_ca_fingerprint", errInvalidJoinToken
	}
	j, err = s.cfg.Store.GetJoinToken(ctx, tok.ID)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, "unknown_or_used_token", errInvalidJoinToken
	}
	if err != nil {
		return nil, "", err
	}
	if !security.TokenMatches(j.Hash, tok.Secret) {
		return nil, "wrong_secret", errInvalidJoinToken
	}
	// The prefixes differ already; the stored kind is what counts, so a
	// row can never be redeemed as the other kind whatever its prefix.
	if kindOf(j) != kind {
		return nil, "wrong_token_kind", errInvalidJoinToken
	}
	if !now.Before(j.ExpiresAt) {
		return nil, "expired_token", errInvalidJoinToken
	}
	return j, "", nil
}
