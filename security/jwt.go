package security

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Access token policy.
const (
	// Issuer is the iss claim of every access token.
	Issuer = "otherix"
	// DefaultAccessTTL is the lifetime of an access token when Issue is given
	// zero: short, because a JWT cannot be revoked before it expires.
	DefaultAccessTTL = 15 * time.Minute
	// MaxAccessTTL bounds any access token's lifetime. It is also how long a
	// retired key keeps verifying: no token it signed can outlive it.
	MaxAccessTTL = time.Hour
	// Leeway is the clock skew tolerated between replicas on exp, nbf and iat.
	Leeway = 30 * time.Second

	signingKeyLen  = 32   // bytes: HS256 wants a key as long as its output
	maxTokenLength = 4096 // bytes: far above a real token; refuses junk cheaply
)

// hs256 is the only accepted algorithm. Naming it in the parser (rather than
// trusting the header) is what refuses "alg: none" and RS/ES/HS512 tokens.
var hs256 = jwt.SigningMethodHS256

// SigningKey is one HMAC key of the ring. The ID travels in the token's kid
// header so Verify picks the key without trying each one.
type SigningKey struct {
	ID        string
	Secret    []byte
	CreatedAt time.Time
	// RetiredAt is when the key stopped signing (zero while current). A key
	// ages out from this time, not from CreatedAt: a key that signed for a
	// month must still verify the tokens it signed just before rotation.
	RetiredAt time.Time
}

// NewSigningKey returns a key with 32 random bytes and a random id.
func NewSigningKey(now time.Time) SigningKey {
	return SigningKey{ID: randomBase62(TokenIDLen), Secret: randomBytes(signingKeyLen), CreatedAt: now}
}

// usable reports whether k has an id and a long enough secret.
func (k SigningKey) usable() bool {
	return k.ID != "" && len(k.Secret) >= signingKeyLen
}

// retiredAt falls back to CreatedAt for a retired key stored without
// RetiredAt, which is the conservative reading (the key ages out sooner).
func (k SigningKey) retiredAt() time.Time {
	if k.RetiredAt.IsZero() {
		return k.CreatedAt
	}
	return k.RetiredAt
}

// KeyRing holds the key that signs and the retired keys that still verify.
// It is a value: Rotate returns a new ring, so a ring shared between
// goroutines (behind an atomic pointer, say) is never written.
type KeyRing struct {
	Current  SigningKey
	Previous []SigningKey // newest first
}

// NewKeyRing returns a ring with one fresh key.
func NewKeyRing(now time.Time) KeyRing {
	return KeyRing{Current: NewSigningKey(now)}
}

// Rotate returns a ring whose current key is new and whose previous keys are
// the old current key (retired now) and the earlier keys that may still have
// unexpired tokens. Keys retired more than MaxAccessTTL plus Leeway ago are
// dropped: every token they signed has expired.
func (r KeyRing) Rotate(now time.Time) KeyRing {
	old := r.Current
	old.RetiredAt = now
	prev := make([]SigningKey, 0, len(r.Previous)+1)
	prev = append(prev, old)
	for _, k := range r.Previous {
		if !agedOut(k, now) {
			prev = append(prev, k)
		}
	}
	return KeyRing{Current: NewSigningKey(now), Previous: prev}
}

// agedOut reports whether a retired key can no longer have live tokens.
func agedOut(k SigningKey, now time.Time) bool {
	return now.After(k.retiredAt().Add(MaxAccessTTL + Leeway))
}

// verificationKey finds the key named kid. A retired key that has aged out
// is refused even if the ring was not rotated since, so a ring that rotates
// rarely does not keep old keys alive.
func (r KeyRing) verificationKey(kid string, now time.Time) (SigningKey, bool) {
	if kid == "" {
		return SigningKey{}, false
	}
	if r.Current.ID == kid {
		return r.Current, r.Current.usable()
	}
	for _, k := range r.Previous {
		if k.ID == kid {
			return k, k.usable() && !agedOut(k, now)
		}
	}
	return SigningKey{}, false
}

// AccessClaims are the verified contents of an access token.
type AccessClaims struct {
	UserID    string    // sub
	Role      Role      // role
	ID        string    // jti, random per token
	KeyID     string    // kid header: the key that signed it
	IssuedAt  time.Time // iat
	NotBefore time.Time // nbf
	ExpiresAt time.Time // exp
}

// wireClaims is the JSON form; it stays unexported so callers never depend
// on the JWT library's types.
type wireClaims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// Issue signs an access token for userID with role, valid from now for ttl
// (DefaultAccessTTL when ttl is zero). It returns the token and its expiry,
// which is whole seconds as JWT times are.
func (r KeyRing) Issue(userID string, role Role, now time.Time, ttl time.Duration) (string, time.Time, error) {
	if ttl == 0 {
		ttl = DefaultAccessTTL
	}
	if userID == "" || !role.Valid() || ttl < 0 || ttl > MaxAccessTTL {
		return "", time.Time{}, ErrBadClaims
	}
	if !r.Current.usable() {
		return "", time.Time{}, ErrBadSigningKey
	}
	exp := jwt.NewNumericDate(now.Add(ttl))
	claims := wireClaims{
		Role: string(role),
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Subject:   userID,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: exp,
			ID:        randomBase62(22), // ≈128 bits, so jti never repeats
		},
	}
	tok := jwt.NewWithClaims(hs256, claims)
	tok.Header["kid"] = r.Current.ID
	s, err := tok.SignedString(r.Current.Secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign access token: %w", err)
	}
	return s, exp.Time, nil
}

// Verify checks an access token at time now: HS256 only, signed by the ring
// key its kid names, issued by Issuer, with iat, nbf and exp present and
// within Leeway, and with a subject, a known role and a jti. It returns an
// error wrapping ErrTokenExpired for a token that is only expired, and
// ErrTokenInvalid for everything else.
func (r KeyRing) Verify(token string, now time.Time) (*AccessClaims, error) {
	if len(token) > maxTokenLength {
		return nil, fmt.Errorf("%w: too long", ErrTokenInvalid)
	}
	var kid string
	keyFunc := func(t *jwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		k, ok := r.verificationKey(kid, now)
		if !ok {
			return nil, errors.New("unknown or retired signing key")
		}
		return k.Secret, nil
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{hs256.Alg()}),
		jwt.WithIssuer(Issuer),
		jwt.WithIssuedAt(),
		jwt.WithExpirationRequired(),
		jwt.WithNotBeforeRequired(),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithStrictDecoding(),
	)
	var c wireClaims
	if _, err := p.ParseWithClaims(token, &c, keyFunc); err != nil {
		// The library checks the signature before the claims, so a forged
		// token is never reported as merely expired.
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, fmt.Errorf("%w: %w", ErrTokenExpired, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	role := Role(c.Role)
	if c.Subject == "" || !role.Valid() || c.ID == "" {
		return nil, fmt.Errorf("%w: missing subject, role or jti", ErrTokenInvalid)
	}
	return &AccessClaims{
		UserID:    c.Subject,
		Role:      role,
		ID:        c.ID,
		KeyID:     kid,
		IssuedAt:  c.IssuedAt.Time,
		NotBefore: c.NotBefore.Time,
		ExpiresAt: c.ExpiresAt.Time,
	}, nil
}
