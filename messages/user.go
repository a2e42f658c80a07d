package messages

import (
	"net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits for identity fields.
const (
	// MaxEmailLength is the longest address SMTP can carry (RFC 5321 §4.5.3.1
	// as corrected by errata 1690), so no real address is refused.
	MaxEmailLength = 254
	// MaxDisplayNameLength bounds a display name, in characters.
	MaxDisplayNameLength = 128
	// MaxTokenNameLength bounds an API token's name, in characters.
	MaxTokenNameLength = 64
)

// knownRoles are the four fixed roles by their stored names. They repeat
// security.Roles because messages cannot import security (security imports
// messages); a test keeps the two in step.
var knownRoles = map[string]bool{"admin": true, "operator": true, "developer": true, "viewer": true}

// ValidRole reports whether role is one of the four fixed role names.
func ValidRole(role string) bool { return knownRoles[role] }

// User is a person who logs in. The row keeps the password hash, so a User
// must never be written to an API response as is: answer with Public().
type User struct {
	ID string `json:"id"`
	// Email is unique and stored lower-cased (NormalizeEmail), so lookups are
	// case-insensitive and the uniqueness guard sees one spelling.
	Email       string `json:"email"`
	DisplayName string `json:"display_name"`
	Role        string `json:"role"`
	// PasswordHash is the encoded argon2id hash with its parameters
	// (security.HashPassword).
	PasswordHash string `json:"password_hash"`
	// Disabled users cannot log in, refresh or use their API tokens; the row
	// stays so their resources keep an owner.
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Revision is the etcd mod revision the row was read at; never stored.
	Revision int64 `json:"revision"`
}

// UserView is the API form of a user: everything but the password hash.
type UserView struct {
	ID          string    `json:"id"`
	Email       string    `json:"email"`
	DisplayName string    `json:"display_name"`
	Role        string    `json:"role"`
	Disabled    bool      `json:"disabled"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Revision    int64     `json:"revision"`
}

// Public returns the user without its password hash, for API responses.
func (u *User) Public() UserView {
	return UserView{ID: u.ID, Email: u.Email, DisplayName: u.DisplayName, Role: u.Role,
		Disabled: u.Disabled, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, Revision: u.Revision}
}

// EntityID implements the store's entity contract.
func (u *User) EntityID() string { return u.ID }

// EntityRevision implements the store's entity contract.
func (u *User) EntityRevision() int64 { return u.Revision }

// SetEntityRevision implements the store's entity contract.
func (u *User) SetEntityRevision(r int64) { u.Revision = r }

// NormalizeEmail is the one spelling of an address that is stored and looked
// up: trimmed and lower-cased. Local parts are case-sensitive in theory but
// not in practice, and two accounts differing only in case would be a trap.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// Normalize puts user-typed fields in their stored form; call it before
// Validate.
func (u *User) Normalize() {
	u.Email = NormalizeEmail(u.Email)
	u.DisplayName = strings.TrimSpace(u.DisplayName)
}

// Validate checks the fields a user or admin sets, after Normalize. It
// returns the first violation.
func (u *User) Validate() error {
	if err := ValidateEmail("email", u.Email); err != nil {
		return err
	}
	if u.Email != NormalizeEmail(u.Email) {
		return Invalid("email", "must be lower case without surrounding spaces")
	}
	if err := validateText("display_name", u.DisplayName, MaxDisplayNameLength); err != nil {
		return err
	}
	if !ValidRole(u.Role) {
		return Invalid("role", "unknown role %q: want admin, operator, developer or viewer", u.Role)
	}
	if u.PasswordHash == "" {
		// An empty hash must never be stored: no password could match it,
		// and a careless comparison might let any password through.
		return Invalid("password", "is required")
	}
	return nil
}

// ValidateEmail checks that email is one bare address (no display name, no
// angle brackets) of at most MaxEmailLength bytes.
func ValidateEmail(field, email string) error {
	if email == "" {
		return Invalid(field, "is required")
	}
	if len(email) > MaxEmailLength {
		return Invalid(field, "must be at most %d characters", MaxEmailLength)
	}
	// net/mail accepts "Name <a@b>" and comments; comparing the parsed
	// address with the input keeps only the bare form. Spaces and control
	// characters are refused outright: they only appear in quoted local
	// parts, which no real account needs and which make keys hard to read.
	for _, r := range email {
		if r <= ' ' || r == 0x7f || unicode.IsSpace(r) {
			return Invalid(field, "must not contain spaces or control characters")
		}
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Name != "" || a.Address != email {
		return Invalid(field, "%q is not an email address", email)
	}
	return nil
}

// validateText checks a free-text field: valid UTF-8, no control characters,
// at most max characters. Empty is allowed.
func validateText(field, s string, max int) error {
	if !utf8.ValidString(s) {
		return Invalid(field, "must be valid UTF-8")
	}
	if utf8.RuneCountInString(s) > max {
		return Invalid(field, "must be at most %d characters", max)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return Invalid(field, "must not contain control characters")
		}
	}
	return nil
}

// APIToken is a long-lived token's stored record. The token itself is shown
// once at creation and never stored; Hash is security.HashToken of its
// secret. Like User, it is answered through Public().
type APIToken struct {
	// ID is the token's public id (security.NewAPIToken), which the token
	// carries so authentication finds the row with one read.
	ID   string `json:"id"`
	Name string `json:"name"`
	// Owner is the id of the user who created the token.
	Owner string `json:"owner"`
	// Role is the creator's role or a lower one, fixed at creation.
	Role      string     `json:"role"`
	Hash      string     `json:"hash"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"` // nil: never expires
	// LastUsedAt is updated at most once a minute (store.TouchToken), so it is
	// a coarse "last seen", not an access log.
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	// Revision is the etcd mod revision the row was read at; never stored.
	Revision int64 `json:"revision"`
}

// APITokenView is the API form of a token: everything but the hash.
type APITokenView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Owner      string     `json:"owner"`
	Role       string     `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	Revision   int64      `json:"revision"`
}

// Public returns the token record without its hash, for API responses.
func (k *APIToken) Public() APITokenView {
	return APITokenView{ID: k.ID, Name: k.Name, Owner: k.Owner, Role: k.Role, CreatedAt: k.CreatedAt,
		ExpiresAt: k.ExpiresAt, LastUsedAt: k.LastUsedAt, Revision: k.Revision}
}

// Expired reports whether the token has an expiry at or before now.
func (k *APIToken) Expired(now time.Time) bool {
	return k.ExpiresAt != nil && !now.Before(*k.ExpiresAt)
}

// EntityID implements the store's entity contract.
func (k *APIToken) EntityID() string { return k.ID }

// EntityRevision implements the store's entity contract.
func (k *APIToken) EntityRevision() int64 { return k.Revision }

// SetEntityRevision implements the store's entity contract.
func (k *APIToken) SetEntityRevision(r int64) { k.Revision = r }

// Validate checks a token record before it is stored.
func (k *APIToken) Validate() error {
	if k.ID == "" || strings.ContainsAny(k.ID, "/\x00") {
		return Invalid("id", "is required and must not contain '/'")
	}
	if strings.TrimSpace(k.Name) == "" {
		return Invalid("name", "is required")
	}
	if err := validateText("name", k.Name, MaxTokenNameLength); err != nil {
		return err
	}
	if k.Owner == "" {
		return Invalid("owner", "is required")
	}
	if !ValidRole(k.Role) {
		return Invalid("role", "unknown role %q: want admin, operator, developer or viewer", k.Role)
	}
	if k.Hash == "" {
		return Invalid("hash", "is required")
	}
	if k.ExpiresAt != nil && !k.ExpiresAt.After(k.CreatedAt) {
		return Invalid("expires_at", "must be after the creation time")
	}
	return nil
}

// Reasons a refresh family is revoked, recorded for the audit log.
const (
	RevokedLogout = "logout" // the user logged out
	RevokedReuse  = "reuse"  // an already-rotated token was presented: likely theft
	RevokedUser   = "user"   // every session of the user was ended (password change, disable, delete)
)

// MaxPreviousHashes is how many rotated-out hashes a refresh family keeps to
// recognise a replayed token: a token replayed within that many rotations
// revokes the family. An older one is merely invalid (an unknown secret never
// revokes, since the family id alone must not end a session). 64 hashes of
// 64 hex characters keep the row near 4 KiB however long the session lives.
const MaxPreviousHashes = 64

// MaxGraceHashes bounds RefreshFamily.Grace: a burst of racing refreshes
// within the grace window cannot grow the row.
const MaxGraceHashes = 8

// RefreshGrace is a rotated-out refresh token hash accepted until Until.
type RefreshGrace struct {
	Hash  string    `json:"hash"`
	Until time.Time `json:"until"`
}

// RefreshFamily is one login session: the chain of refresh tokens that
// rotate from one login. Only the hash of the current token is valid; the
// previous hashes are kept to detect reuse, which revokes the family. It is
// internal and never answered to clients.
type RefreshFamily struct {
	ID          string `json:"id"` // the family id the tokens carry
	UserID      string `json:"user_id"`
	CurrentHash string `json:"current_hash"`
	// PreviousHashes are the most recent rotated-out hashes, newest first,
	// at most MaxPreviousHashes.
	PreviousHashes []string `json:"previous_hashes,omitempty"`
	// Grace lists hashes rotated out moments ago that may still be
	// presented until their time (a second client of the same session that
	// raced the first to refresh): presenting one rotates the family again
	// instead of revoking it. At most MaxGraceHashes, expired ones pruned at
	// each rotation.
	Grace []RefreshGrace `json:"grace,omitempty"`
	// Generation counts rotations; it is 0 for the login's first token.
	Generation    int        `json:"generation"`
	Revoked       bool       `json:"revoked"`
	RevokedReason string     `json:"revoked_reason,omitempty"`
	RevokedAt     *time.Time `json:"revoked_at,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	RotatedAt     time.Time  `json:"rotated_at"`
	// ExpiresAt is absolute: rotation does not extend it, so a stolen and
	// refreshed session still ends, and the user logs in again.
	ExpiresAt time.Time `json:"expires_at"`
	// Revision is the etcd mod revision the row was read at; never stored.
	Revision int64 `json:"-"`
}

// EntityID implements the store's entity contract.
func (f *RefreshFamily) EntityID() string { return f.ID }

// EntityRevision implements the store's entity contract.
func (f *RefreshFamily) EntityRevision() int64 { return f.Revision }

// SetEntityRevision implements the store's entity contract.
func (f *RefreshFamily) SetEntityRevision(r int64) { f.Revision = r }

// Expired reports whether the family is past its absolute expiry at now.
func (f *RefreshFamily) Expired(now time.Time) bool { return !now.Before(f.ExpiresAt) }
