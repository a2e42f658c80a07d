package identity

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// userWriteAttempts bounds read-modify-write retries of a user row.
const userWriteAttempts = 3

// parseRole parses a role name, answering invalid_role for an unknown one.
func parseRole(s string) (security.Role, error) {
	r := security.Role(s)
	if !r.Valid() {
		return "", invalidRole(s)
	}
	return r, nil
}

// CreateUser adds a user (the HTTP layer lets only admins call it).
func (s *Service) CreateUser(ctx context.Context, req messages.CreateUserRequest) (*messages.UserView, error) {
	email := messages.NormalizeEmail(req.Email)
	if err := messages.ValidateEmail("email", email); err != nil {
		return nil, err
	}
	role, err := parseRole(req.Role)
	if err != nil {
		return nil, err
	}
	if err := security.ValidatePassword(req.Password); err != nil {
		return nil, err
	}
	hash, err := security.HashPassword(req.Password, security.DefaultParams())
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	u := &messages.User{ID: messages.NewID(), Email: email, DisplayName: req.DisplayName, Role: string(role),
		PasswordHash: hash, CreatedAt: now, UpdatedAt: now}
	u.Normalize()
	if err := u.Validate(); err != nil {
		return nil, err
	}
	if err := s.st.Commit(ctx, store.CreateUser(store.NewTxn(), u)); err != nil {
		return nil, err
	}
	v := u.Public()
	return &v, nil
}

// GetUser returns a user by id.
func (s *Service) GetUser(ctx context.Context, id string) (*messages.UserView, error) {
	if !messages.ValidID(id) {
		return nil, messages.NotFound("user", id)
	}
	u, err := s.st.GetUser(ctx, id)
	if err != nil {
		return nil, err
	}
	v := u.Public()
	return &v, nil
}

// ListUsers returns one page of users in creation order.
func (s *Service) ListUsers(ctx context.Context, page store.Page) ([]messages.UserView, string, error) {
	us, next, err := s.st.ListUsers(ctx, page)
	if err != nil {
		return nil, "", err
	}
	out := make([]messages.UserView, 0, len(us))
	for _, u := range us {
		out = append(out, u.Public())
	}
	return out, next, nil
}

// UpdateMe changes the caller's display name and, given the current
// password, the password. A password change ends every session of the user
// (refresh families); API tokens stay, since they are revoked one by one.
// Current-password checks count against the account's login rate limit.
func (s *Service) UpdateMe(ctx context.Context, p messages.Principal, req messages.UpdateMeRequest) (*messages.UserView, error) {
	changePassword := req.NewPassword != ""
	if changePassword {
		if err := security.ValidatePassword(req.NewPassword); err != nil {
			return nil, err
		}
	}
	var newHash string
	for attempt := 0; ; attempt++ {
		u, err := s.st.GetUser(ctx, p.UserID)
		if err != nil {
			return nil, err
		}
		next := *u
		if req.DisplayName != nil {
			next.DisplayName = *req.DisplayName
		}
		if changePassword && newHash == "" {
			if ok, wait := s.perAccount.Take(u.Email, s.cfg.Now()); !ok {
				return nil, rateLimited(wait)
			}
			var ok bool
			if err := s.hashing(ctx, func() { ok, _, _ = security.VerifyPassword(u.PasswordHash, req.CurrentPassword) }); err != nil {
				return nil, err
			}
			if !ok {
				s.record(messages.AuditEntry{Actor: u.ID, Action: "user.passwd", Target: u.ID, Result: "failed"})
				return nil, errWrongCurrentPassword
			}
			if newHash, err = security.HashPassword(req.NewPassword, security.DefaultParams()); err != nil {
				return nil, err
			}
		}
		if changePassword {
			next.PasswordHash = newHash
		}
		next.UpdatedAt = s.cfg.Now().UTC()
		next.Normalize()
		err = s.st.Commit(ctx, store.UpdateUser(store.NewTxn(), u, &next))
		if messages.KindOf(err) == messages.KindStale && attempt+1 < userWriteAttempts {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.users.drop(u.ID)
		if changePassword {
			if _, err := s.st.RevokeUserSessions(ctx, u.ID, messages.RevokedUser); err != nil {
				return nil, fmt.Errorf("password changed, but ending its sessions failed: %w", err)
			}
			s.record(messages.AuditEntry{Actor: u.ID, Action: "user.passwd", Target: u.ID, Result: "ok"})
		}
		got, err := s.st.GetUser(ctx, u.ID)
		if err != nil {
			return nil, err
		}
		v := got.Public()
		return &v, nil
	}
}

// SetRole changes a user's role. Demoting the last admin is refused
// (last_admin). The check counts admins and then writes, so two admins
// demoting each other at the same instant could both pass; an operator can
// always recover with otherix-api's bootstrap path (documented limitation).
// The new role applies to requests within AuthCacheTTL.
func (s *Service) SetRole(ctx context.Context, id, role string) (*messages.UserView, error) {
	r, err := parseRole(role)
	if err != nil {
		return nil, err
	}
	if !messages.ValidID(id) {
		return nil, messages.NotFound("user", id)
	}
	for attempt := 0; ; attempt++ {
		u, err := s.st.GetUser(ctx, id)
		if err != nil {
			return nil, err
		}
		if u.Role == string(r) {
			v := u.Public()
			return &v, nil
		}
		if u.Role == string(security.RoleAdmin) {
			if err := s.keepAnAdmin(ctx, u.ID); err != nil {
				return nil, err
			}
		}
		next := *u
		next.Role, next.UpdatedAt = string(r), s.cfg.Now().UTC()
		err = s.st.Commit(ctx, store.UpdateUser(store.NewTxn(), u, &next))
		if messages.KindOf(err) == messages.KindStale && attempt+1 < userWriteAttempts {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.users.drop(id)
		got, err := s.st.GetUser(ctx, id)
		if err != nil {
			return nil, err
		}
		v := got.Public()
		return &v, nil
	}
}

// keepAnAdmin returns errLastAdmin unless an enabled admin other than except
// exists.
func (s *Service) keepAnAdmin(ctx context.Context, except string) error {
	cursor := ""
	for {
		us, next, err := s.st.ListUsers(ctx, store.Page{Limit: store.MaxPageSize, Cursor: cursor})
		if err != nil {
			return err
		}
		for _, u := range us {
			if u.ID != except && u.Role == string(security.RoleAdmin) && !u.Disabled {
				return nil
			}
		}
		if next == "" {
			return errLastAdmin
		}
		cursor = next
	}
}

// DeleteUser removes a user, ends its sessions and deletes its API tokens.
// Deleting the last admin is refused (last_admin). The user's VMs keep their
// owner id.
func (s *Service) DeleteUser(ctx context.Context, id string) error {
	if !messages.ValidID(id) {
		return messages.NotFound("user", id)
	}
	u, err := s.st.GetUser(ctx, id)
	if err != nil {
		return err
	}
	if u.Role == string(security.RoleAdmin) {
		if err := s.keepAnAdmin(ctx, u.ID); err != nil {
			return err
		}
	}
	if err := s.st.Commit(ctx, store.DeleteUser(store.NewTxn(), u)); err != nil {
		return err
	}
	s.users.drop(id)
	s.tokens.dropIf(func(k *messages.APIToken) bool { return k.Owner == id })
	var errs []error
	if _, err := s.st.RevokeUserSessions(ctx, id, messages.RevokedUser); err != nil {
		errs = append(errs, err)
	}
	if _, err := s.st.DeleteOwnerTokens(ctx, id); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		// The user is gone, so neither its sessions nor its tokens
		// authenticate any more (both check the user); what is left is rows
		// for the sweeps.
		s.log.Warn("delete user: cleanup incomplete", "user", id, "err", err)
	}
	return nil
}

// generatedPasswordLen is the length of a generated bootstrap password:
// 24 base62 characters, about 143 bits.
const generatedPasswordLen = 24

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func generatePassword() string {
	var b strings.Builder
	max := big.NewInt(int64(len(base62)))
	for b.Len() < generatedPasswordLen {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		b.WriteByte(base62[n.Int64()])
	}
	return b.String()
}

// BootstrapAdmin creates the first admin if the cluster has no user yet and
// never had one bootstrapped (store.BootstrapAdmin). With password "" a
// strong password is generated and returned, for the caller to show once;
// generated is "" when the admin was not created or the password was given.
func (s *Service) BootstrapAdmin(ctx context.Context, email, password string) (created bool, generated string, err error) {
	email = messages.NormalizeEmail(email)
	if err := messages.ValidateEmail("admin.email", email); err != nil {
		return false, "", err
	}
	if password == "" {
		generated = generatePassword()
		password = generated
	} else if err := security.ValidatePassword(password); err != nil {
		return false, "", fmt.Errorf("admin.password: %w", err)
	}
	hash, err := security.HashPassword(password, security.DefaultParams())
	if err != nil {
		return false, "", err
	}
	created, err = s.st.BootstrapAdmin(ctx, email, hash)
	if err != nil || !created {
		return false, "", err
	}
	s.record(messages.AuditEntry{Actor: "system", Action: "user.bootstrap_admin", Target: email, Result: "ok"})
	return true, generated, nil
}
