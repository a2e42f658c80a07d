package messages_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

func goodUser() messages.User {
	return messages.User{ID: messages.NewID(), Email: "alice@example.com", DisplayName: "Alice",
		Role: "developer", PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"}
}

func TestUserValidate(t *testing.T) {
	long := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 185) + ".com" // 254
	for _, tc := range []struct {
		name   string
		change func(u *messages.User)
		field  string // "" when valid
	}{
		{"valid", func(*messages.User) {}, ""},
		{"empty display name", func(u *messages.User) { u.DisplayName = "" }, ""},
		{"254-char email", func(u *messages.User) { u.Email = long }, ""},
		{"128-rune display name", func(u *messages.User) { u.DisplayName = strings.Repeat("é", 128) }, ""},
		{"plus address", func(u *messages.User) { u.Email = "a+b@example.com" }, ""},
		{"no email", func(u *messages.User) { u.Email = "" }, "email"},
		{"255-char email", func(u *messages.User) { u.Email = "a" + long }, "email"},
		{"no at", func(u *messages.User) { u.Email = "alice.example.com" }, "email"},
		{"no domain", func(u *messages.User) { u.Email = "alice@" }, "email"},
		{"display form", func(u *messages.User) { u.Email = "Alice <alice@example.com>" }, "email"},
		{"angle brackets", func(u *messages.User) { u.Email = "<alice@example.com>" }, "email"},
		{"two addresses", func(u *messages.User) { u.Email = "a@example.com,b@example.com" }, "email"},
		{"space", func(u *messages.User) { u.Email = "al ice@example.com" }, "email"},
		{"newline", func(u *messages.User) { u.Email = "alice@example.com\n" }, "email"},
		{"upper case", func(u *messages.User) { u.Email = "Alice@example.com" }, "email"},
		{"long display name", func(u *messages.User) { u.DisplayName = strings.Repeat("x", 129) }, "display_name"},
		{"control in display name", func(u *messages.User) { u.DisplayName = "a\x1bb" }, "display_name"},
		{"bad utf-8 display name", func(u *messages.User) { u.DisplayName = "a\xffb" }, "display_name"},
		{"unknown role", func(u *messages.User) { u.Role = "root" }, "role"},
		{"capitalised role", func(u *messages.User) { u.Role = "Admin" }, "role"},
		{"no hash", func(u *messages.User) { u.PasswordHash = "" }, "password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := goodUser()
			tc.change(&u)
			checkField(t, u.Validate(), tc.field)
		})
	}
}

// checkField asserts err is nil when field is empty, else an invalid_field
// error naming field.
func checkField(t *testing.T, err error, field string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("Validate = %v, want nil", err)
		}
		return
	}
	e, ok := err.(*messages.Error)
	if !ok || e.Kind != messages.KindInvalid || e.Details["field"] != field {
		t.Fatalf("Validate = %v, want an invalid %s", err, field)
	}
}

func TestUserNormalize(t *testing.T) {
	u := goodUser()
	u.Email, u.DisplayName = "  Alice@Example.COM ", " Alice "
	u.Normalize()
	if u.Email != "alice@example.com" || u.DisplayName != "Alice" {
		t.Fatalf("normalized to %q, %q", u.Email, u.DisplayName)
	}
	if err := u.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestRolesMatchSecurity(t *testing.T) {
	var got []string
	for _, r := range security.Roles() {
		if !messages.ValidRole(string(r)) {
			t.Errorf("security role %q is not valid in messages", r)
		}
		got = append(got, string(r))
	}
	for _, r := range []string{"", "root", "Admin", "superuser"} {
		if messages.ValidRole(r) || slices.Contains(got, r) {
			t.Errorf("%q is a role", r)
		}
	}
}

// TestPublicOmitsSecrets checks that API views never carry a hash, however
// the struct evolves: the marshalled view is searched for the hash value.
func TestPublicOmitsSecrets(t *testing.T) {
	u := goodUser()
	u.Revision = 7
	b, err := json.Marshal(u.Public())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), u.PasswordHash) || strings.Contains(string(b), "password") {
		t.Errorf("user view leaks the hash: %s", b)
	}
	var back map[string]any
	_ = json.Unmarshal(b, &back)
	for _, k := range []string{"id", "email", "display_name", "role", "disabled", "created_at", "updated_at", "revision"} {
		if _, ok := back[k]; !ok {
			t.Errorf("user view lacks %q: %s", k, b)
		}
	}

	now := time.Now()
	k := messages.APIToken{ID: "abc", Name: "ci", Owner: u.ID, Role: "viewer", Hash: strings.Repeat("f", 64),
		CreatedAt: now, LastUsedAt: &now}
	b, err = json.Marshal(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), k.Hash) || strings.Contains(string(b), `"hash"`) {
		t.Errorf("token view leaks the hash: %s", b)
	}
	if !strings.Contains(string(b), "last_used_at") || strings.Contains(string(b), "expires_at") {
		t.Errorf("token view optional fields wrong: %s", b)
	}
}

func TestAPITokenValidate(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	later, earlier := now.Add(time.Hour), now.Add(-time.Hour)
	for _, tc := range []struct {
		name   string
		change func(k *messages.APIToken)
		field  string
	}{
		{"valid", func(*messages.APIToken) {}, ""},
		{"with expiry", func(k *messages.APIToken) { k.ExpiresAt = &later }, ""},
		{"no id", func(k *messages.APIToken) { k.ID = "" }, "id"},
		{"slash in id", func(k *messages.APIToken) { k.ID = "a/b" }, "id"},
		{"no name", func(k *messages.APIToken) { k.Name = "  " }, "name"},
		{"long name", func(k *messages.APIToken) { k.Name = strings.Repeat("n", 65) }, "name"},
		{"no owner", func(k *messages.APIToken) { k.Owner = "" }, "owner"},
		{"bad role", func(k *messages.APIToken) { k.Role = "god" }, "role"},
		{"no hash", func(k *messages.APIToken) { k.Hash = "" }, "hash"},
		{"expired at birth", func(k *messages.APIToken) { k.ExpiresAt = &earlier }, "expires_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := messages.APIToken{ID: "abcdefghijkl", Name: "ci deploy", Owner: "u1", Role: "developer",
				Hash: strings.Repeat("0", 64), CreatedAt: now}
			tc.change(&k)
			checkField(t, k.Validate(), tc.field)
		})
	}
}

func TestExpiry(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	exp := now.Add(time.Minute)
	k := messages.APIToken{ExpiresAt: &exp}
	if k.Expired(now) || !k.Expired(exp) || (&messages.APIToken{}).Expired(now.Add(1e6*time.Hour)) {
		t.Error("APIToken.Expired wrong")
	}
	f := messages.RefreshFamily{ExpiresAt: exp}
	if f.Expired(now) || !f.Expired(exp) {
		t.Error("RefreshFamily.Expired wrong")
	}
}

func TestRefreshFamilyRowOmitsRevision(t *testing.T) {
	b, _ := json.Marshal(messages.RefreshFamily{ID: "f", Revision: 9})
	if strings.Contains(string(b), "revision") {
		t.Errorf("family row carries its revision: %s", b)
	}
}
