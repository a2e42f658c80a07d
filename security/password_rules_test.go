package security

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/otherix/otherix/messages"
)

func TestValidatePassword(t *testing.T) {
	for _, tc := range []struct {
		name, pw string
		want     error
	}{
		{"empty", "", ErrPasswordTooShort},
		{"eleven", "tangerine-4", ErrPasswordTooShort},
		{"twelve", "tangerine-42", nil},
		{"passphrase", "correct horse battery staple", nil},
		{"eleven runes, many bytes", "日本語のパスワードです", ErrPasswordTooShort},
		{"twelve runes", "日本語のパスワードですね", nil},
		{"max bytes", strings.Repeat("tangerine-", 102) + "42xx", nil},
		{"over max bytes", strings.Repeat("tangerine-", 102) + "42xxx", ErrPasswordTooLong},
		{"listed", "password1234", ErrPasswordTooCommon},
		{"listed, other case", "PassWord1234", ErrPasswordTooCommon},
		{"listed digits", "123456789012", ErrPasswordTooCommon},
		{"listed keyboard", "QWERTYUIOP12", ErrPasswordTooCommon},
		{"stem with digits", "Password12345678", ErrPasswordTooCommon},
		{"stem with symbols", "Welcome2025!!", ErrPasswordTooCommon},
		{"stem ending in a digit", "Trustno1-2025", ErrPasswordTooCommon},
		{"product name", "Otherix2026!", ErrPasswordTooCommon},
		{"repeated character", "aaaaaaaaaaaa", ErrPasswordTooCommon},
		{"repeated digit", "000000000000000", ErrPasswordTooCommon},
		{"stem inside is fine", "mypassword-is-long-enough", nil},
		{"digits before stem are fine", "1234password5678x", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidatePassword(tc.pw)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("ValidatePassword = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("ValidatePassword = %v, want %v", err, tc.want)
			}
			if messages.KindOf(err) != messages.KindInvalid {
				t.Errorf("kind = %v, want KindInvalid", messages.KindOf(err))
			}
			if tc.pw != "" && strings.Contains(err.Error(), tc.pw) {
				t.Error("error text contains the password")
			}
		})
	}
}

func TestPasswordErrorCodes(t *testing.T) {
	for err, code := range map[*messages.Error]string{
		ErrPasswordTooShort:  "password_too_short",
		ErrPasswordTooLong:   "password_too_long",
		ErrPasswordTooCommon: "password_too_common",
	} {
		if err.Code != code || err.Kind != messages.KindInvalid {
			t.Errorf("%s: kind %v code %q", code, err.Kind, err.Code)
		}
	}
}

// The list must stay usable: lowercase (comparison lowercases the input),
// no blanks or duplicates, and short entries must be stems that the suffix
// trimming can reach.
func TestCommonPasswordList(t *testing.T) {
	seen := map[string]bool{}
	for line := range strings.Lines(commonPasswordsText) {
		e := strings.TrimSuffix(line, "\n")
		if e == "" || strings.HasPrefix(e, "#") {
			continue
		}
		if e != strings.ToLower(e) || e != strings.TrimSpace(e) || strings.ContainsAny(e, " \t") {
			t.Errorf("entry %q: want lowercase, no spaces", e)
		}
		if seen[e] {
			t.Errorf("entry %q: duplicate", e)
		}
		seen[e] = true
		if utf8.RuneCountInString(e) < MinPasswordRunes && strings.TrimRight(e, suffixChars) != e {
			t.Errorf("stem %q ends in a suffix character, so it can never match", e)
		}
		if !isCommonPassword(e) {
			t.Errorf("entry %q is not refused", e)
		}
	}
	if len(seen) < 150 || len(seen) != len(commonPasswords()) {
		t.Errorf("list has %d entries, parsed %d", len(seen), len(commonPasswords()))
	}
}
