package security

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// Token formats. Every opaque token is <prefix><id><sep><secret>: the prefix
// names the kind (so secret scanners and humans recognise it, and a token of
// one kind is never accepted as another), the public id lets the server find
// the stored hash with one lookup instead of scanning, and the secret is
// 43 base62 characters ≈ 256 bits, as much entropy as 32 random bytes.
const (
	APITokenPrefix     = "otx_"  // long-lived API token: otx_<id>_<secret>
	RefreshTokenPrefix = "otr_"  // refresh token: otr_<family>_<secret>
	JoinTokenPrefix    = "otxj_" // node join token: otxj_<id>.<secret>@<ca sha256 hex>
	// ReplicaJoinTokenPrefix starts a replica join token, same shape as a
	// node's: otxr_<id>.<secret>@<ca sha256 hex>.
	ReplicaJoinTokenPrefix = "otxr_"

	TokenIDLen     = 12 // base62 characters of a public id or family (≈71 bits)
	TokenSecretLen = 43 // base62 characters of a secret (≈256 bits)

	fingerprintHexLen = 2 * sha256.Size
)

// NewAPIToken returns a new API token, its public id and the hash to store.
// The token is shown to the user once and never stored.
func NewAPIToken() (token, id, hash string) {
	id, secret := randomBase62(TokenIDLen), randomBase62(TokenSecretLen)
	return APITokenPrefix + id + "_" + secret, id, HashToken(secret)
}

// ParseAPIToken splits an API token into its id and secret. It is strict
// about prefix, lengths, separator and alphabet, and returns an error
// wrapping ErrTokenInvalid for anything else (truncated, garbled, another
// kind of token).
func ParseAPIToken(s string) (id, secret string, err error) {
	return parseIDSecret(s, APITokenPrefix, '_', "api token")
}

// NewRefreshToken starts a new refresh-token family (one login session) and
// returns its first token, the family id and the hash to store.
func NewRefreshToken() (token, family, hash string) {
	family = randomBase62(TokenIDLen)
	token, hash, _ = RotateRefreshToken(family)
	return token, family, hash
}

// RotateRefreshToken returns the next token of an existing family and the
// hash to store in place of the previous one. Keeping the family in the token
// is what lets the server recognise a replayed, already-rotated token and
// revoke the whole family.
func RotateRefreshToken(family string) (token, hash string, err error) {
	if len(family) != TokenIDLen || !isBase62(family) {
		return "", "", fmt.Errorf("%w: refresh token: malformed family", ErrTokenInvalid)
	}
	secret := randomBase62(TokenSecretLen)
	return RefreshTokenPrefix + family + "_" + secret, HashToken(secret), nil
}

// ParseRefreshToken splits a refresh token into its family and secret, as
// strictly as ParseAPIToken.
func ParseRefreshToken(s string) (family, secret string, err error) {
	return parseIDSecret(s, RefreshTokenPrefix, '_', "refresh token")
}

// JoinToken is a parsed node join token. CAFingerprint is the lowercase hex
// SHA-256 of the cluster CA certificate, which the agent pins on first
// contact (trust on first use, DESIGN §6).
type JoinToken struct {
	ID            string
	Secret        string
	CAFingerprint string
}

// NewJoinToken returns a one-time join token that pins the CA with the given
// SHA-256 fingerprint (64 hex digits, either case), its id and the hash to
// store.
func NewJoinToken(caFingerprint string) (token, id, hash string, err error) {
	return newJoinToken(JoinTokenPrefix, caFingerprint)
}

// NewReplicaJoinToken is NewJoinToken for a replica join token (otxr_).
func NewReplicaJoinToken(caFingerprint string) (token, id, hash string, err error) {
	return newJoinToken(ReplicaJoinTokenPrefix, caFingerprint)
}

func newJoinToken(prefix, caFingerprint string) (token, id, hash string, err error) {
	fp := strings.ToLower(caFingerprint)
	if !isLowerHex(fp, fingerprintHexLen) {
		return "", "", "", fmt.Errorf("%w: join token: ca fingerprint must be 64 hex digits", ErrTokenInvalid)
	}
	id, secret := randomBase62(TokenIDLen), randomBase62(TokenSecretLen)
	return prefix + id + "." + secret + "@" + fp, id, HashToken(secret), nil
}

// ParseJoinToken splits a join token strictly; the fingerprint must be 64
// lowercase hex digits, as NewJoinToken writes it.
func ParseJoinToken(s string) (JoinToken, error) {
	return parseJoinToken(s, JoinTokenPrefix, "join token")
}

// ParseReplicaJoinToken is ParseJoinToken for a replica join token: a node
// join token is refused here, and a replica's by ParseJoinToken.
func ParseReplicaJoinToken(s string) (JoinToken, error) {
	return parseJoinToken(s, ReplicaJoinTokenPrefix, "replica join token")
}

func parseJoinToken(s, prefix, kind string) (JoinToken, error) {
	head, fp, ok := strings.Cut(s, "@")
	if !ok || !isLowerHex(fp, fingerprintHexLen) {
		return JoinToken{}, fmt.Errorf("%w: %s: malformed ca fingerprint", ErrTokenInvalid, kind)
	}
	id, secret, err := parseIDSecret(head, prefix, '.', kind)
	if err != nil {
		return JoinToken{}, err
	}
	return JoinToken{ID: id, Secret: secret, CAFingerprint: fp}, nil
}

// parseIDSecret checks <prefix><id><sep><secret> with fixed lengths and the
// base62 alphabet. Reasons name the part that failed, never its content.
func parseIDSecret(s, prefix string, sep byte, kind string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return "", "", fmt.Errorf("%w: %s: wrong prefix", ErrTokenInvalid, kind)
	}
	if len(rest) != TokenIDLen+1+TokenSecretLen || rest[TokenIDLen] != sep {
		return "", "", fmt.Errorf("%w: %s: wrong length", ErrTokenInvalid, kind)
	}
	id, secret = rest[:TokenIDLen], rest[TokenIDLen+1:]
	if !isBase62(id) || !isBase62(secret) {
		return "", "", fmt.Errorf("%w: %s: bad character", ErrTokenInvalid, kind)
	}
	return id, secret, nil
}

// isLowerHex reports whether s is n lowercase hex digits.
func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// HashToken returns hex(SHA-256(secret)), the form in which token secrets are
// stored. A fast hash is right here, unlike for passwords: the secret is 256
// random bits, so no amount of guessing speed makes brute force feasible, and
// a slow hash would cost tens of milliseconds on every authenticated request
// (the budget is 0.2 ms). Its only job is that a leaked store yields no
// usable tokens.
func HashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// TokenMatches reports in constant time whether secret hashes to hash.
func TokenMatches(hash, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(hash), []byte(HashToken(secret))) == 1
}
