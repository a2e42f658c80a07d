package identity

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// MaxAPITokenTTL is the longest lifetime an API token may be given.
const MaxAPITokenTTL = 365 * 24 * time.Hour

// CreateAPIToken creates a token for the caller with the caller's role or a
// lower one and returns it in plaintext, the only time it is shown.
func (s *Service) CreateAPIToken(ctx context.Context, p messages.Principal, req messages.CreateAPITokenRequest) (*messages.CreatedAPIToken, error) {
	name := strings.TrimSpace(req.Name)
	if name == "" {
		return nil, messages.Invalid("name", "is required")
	}
	if utf8.RuneCountInString(name) > messages.MaxTokenNameLength {
		return nil, messages.Invalid("name", "must be at most %d characters", messages.MaxTokenNameLength)
	}
	roleName := req.Role
	if roleName == "" {
		roleName = p.Role
	}
	role, err := parseRole(roleName)
	if err != nil {
		return nil, err
	}
	if !role.AtMost(security.Role(p.Role)) {
		return nil, errRoleExceedsCaller
	}
	now := s.cfg.Now().UTC()
	var expires *time.Time
	if req.TTL != "" {
		ttl, err := time.ParseDuration(req.TTL)
		switch {
		case err != nil:
			return nil, invalidTTL("not a duration such as 720h")
		case ttl <= 0:
			return nil, invalidTTL("must be positive")
		case ttl > MaxAPITokenTTL:
			return nil, invalidTTL("must be at most 8760h (one year)")
		}
		e := now.Add(ttl)
		expires = &e
	}
	if p.TokenID != "" {
		// A token made with a token may not outlive it: otherwise a leaked
		// short-lived CI token could mint a permanent one.
		parent, err := s.st.GetAPIToken(ctx, p.TokenID)
		if err != nil {
			return nil, err
		}
		if parent.ExpiresAt != nil && (expires == nil || expires.After(*parent.ExpiresAt)) {
			e := *parent.ExpiresAt
			expires = &e
		}
	}
	token, id, hash := security.NewAPIToken()
	k := &messages.APIToken{ID: id, Name: name, Owner: p.UserID, Role: string(role), Hash: hash,
		CreatedAt: now, ExpiresAt: expires}
	if err := s.st.Commit(ctx, store.CreateAPIToken(store.NewTxn(), k)); err != nil {
		return nil, err
	}
	s.record(messages.AuditEntry{Actor: p.UserID, Action: "token.create", Target: id, Result: "ok"})
	return &messages.CreatedAPIToken{Token: token, APIToken: k.Public()}, nil
}

// ListAPITokens lists owner's tokens, or every token for owner "".
func (s *Service) ListAPITokens(ctx context.Context, owner string, page store.Page) ([]messages.APITokenView, string, error) {
	var (
		ks   []*messages.APIToken
		next string
		err  error
	)
	if owner == "" {
		ks, next, err = store.List[messages.APIToken](ctx, s.st, store.APITokens, page)
	} else {
		ks, next, err = s.st.ListAPITokens(ctx, owner, page)
	}
	if err != nil {
		return nil, "", err
	}
	out := make([]messages.APITokenView, 0, len(ks))
	for _, k := range ks {
		out = append(out, k.Public())
	}
	return out, next, nil
}

// RevokeAPIToken deletes a token of owner's (anyone's for owner ""); another
// owner's token is not found. It stops working at once on this replica and
// within AuthCacheTTL on the others.
func (s *Service) RevokeAPIToken(ctx context.Context, owner, id string) error {
	if len(id) != security.TokenIDLen || strings.ContainsAny(id, "/\x00") {
		return messages.NotFound("api token", id)
	}
	if err := s.st.RevokeAPIToken(ctx, id, owner); err != nil {
		return err
	}
	s.tokens.drop(id)
	return nil
}
