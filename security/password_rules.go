package security

import (
	_ "embed"
	"strings"
	"sync"
	"unicode/utf8"
)

// Password length limits. The minimum counts characters (runes), so a
// passphrase in any script is judged by what the user typed; the maximum
// counts bytes because it bounds the work and memory a request can cost.
const (
	MinPasswordRunes = 12
	MaxPasswordBytes = 1024
)

// commonPasswordsText is the built-in deny list: one lowercase entry a line,
// '#' comments. Entries of 12 characters or more are refused as they are;
// shorter entries are stems that are refused with digits or symbols appended
// ("password" catches "Password1234!").
//
//go:embed common_passwords.txt
var commonPasswordsText string

// commonPasswords parses the list once, on first use.
var commonPasswords = sync.OnceValue(func() map[string]struct{} {
	set := make(map[string]struct{})
	for line := range strings.Lines(commonPasswordsText) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		set[strings.ToLower(line)] = struct{}{}
	}
	return set
})

// suffixChars are what people append to a common word to pass a length or
// character-class rule.
const suffixChars = "0123456789!@#$%^&*?.,-_+= "

// ValidatePassword applies the password rules for new passwords: at most
// MaxPasswordBytes bytes, at least MinPasswordRunes characters, and not a
// common password. It returns ErrPasswordTooLong, ErrPasswordTooShort or
// ErrPasswordTooCommon (domain errors, KindInvalid); the error never contains
// the password.
func ValidatePassword(pw string) error {
	if len(pw) > MaxPasswordBytes {
		return ErrPasswordTooLong
	}
	if utf8.RuneCountInString(pw) < MinPasswordRunes {
		return ErrPasswordTooShort
	}
	if isCommonPassword(pw) {
		return ErrPasswordTooCommon
	}
	return nil
}

// isCommonPassword compares case-insensitively against the list, then the
// list's stems with appended digits and symbols, and refuses one character
// repeated ("aaaaaaaaaaaa"), which no list can enumerate.
func isCommonPassword(pw string) bool {
	lower := strings.ToLower(pw)
	set := commonPasswords()
	if _, ok := set[lower]; ok {
		return true
	}
	if stem := strings.TrimRight(lower, suffixChars); stem != "" && stem != lower {
		if _, ok := set[stem]; ok {
			return true
		}
	}
	first, _ := utf8.DecodeRuneInString(lower)
	return strings.Trim(lower, string(first)) == ""
}
