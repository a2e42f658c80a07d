package security

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

var b64url = base64.RawURLEncoding

// handToken builds a JWT from raw header and claims, signed with HMAC-SHA256
// under secret whatever the header says, so a test changes one thing only.
func handToken(t *testing.T, header, claims map[string]any, secret []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	text := b64url.EncodeToString(h) + "." + b64url.EncodeToString(c)
	if secret == nil {
		return text + "."
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(text))
	return text + "." + b64url.EncodeToString(mac.Sum(nil))
}

// goodClaims are claims Verify accepts at t0.
func goodClaims() map[string]any {
	return map[string]any{"sub": "u1", "role": "developer", "iss": Issuer, "jti": "j1",
		"iat": t0.Unix(), "nbf": t0.Unix(), "exp": t0.Add(DefaultAccessTTL).Unix()}
}

func TestIssueVerify(t *testing.T) {
	ring := NewKeyRing(t0)
	tok, exp, err := ring.Issue("u1", RoleDeveloper, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(t0.Add(15 * time.Minute)) {
		t.Errorf("exp = %v, want 15 minutes after issue", exp)
	}
	c, err := ring.Verify(tok, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != "u1" || c.Role != RoleDeveloper || c.KeyID != ring.Current.ID || c.ID == "" ||
		!c.IssuedAt.Equal(t0) || !c.NotBefore.Equal(t0) || !c.ExpiresAt.Equal(exp) {
		t.Errorf("claims = %+v", c)
	}
	tok2, _, _ := ring.Issue("u1", RoleDeveloper, t0, 0)
	c2, _ := ring.Verify(tok2, t0)
	if c2 == nil || c2.ID == c.ID {
		t.Error("jti repeats")
	}
	// The header must name the key and the one algorithm.
	h, _ := b64url.DecodeString(strings.Split(tok, ".")[0])
	var header map[string]any
	if err := json.Unmarshal(h, &header); err != nil || header["alg"] != "HS256" || header["kid"] != ring.Current.ID {
		t.Errorf("header = %s", h)
	}
}

func TestVerifyTimes(t *testing.T) {
	ring := NewKeyRing(t0)
	tok, exp, err := ring.Issue("u1", RoleViewer, t0, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		at   time.Time
		want error
	}{
		{"at issue", t0, nil},
		{"just before exp", exp.Add(-time.Second), nil},
		{"within leeway after exp", exp.Add(Leeway - time.Second), nil},
		{"expired", exp.Add(Leeway + time.Second), ErrTokenExpired},
		{"long expired", exp.Add(24 * time.Hour), ErrTokenExpired},
		{"within leeway before nbf", t0.Add(-Leeway + time.Second), nil},
		{"not yet valid", t0.Add(-Leeway - time.Second), ErrTokenInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ring.Verify(tok, tc.at)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	ring := NewKeyRing(t0)
	key := ring.Current
	tok, _, err := ring.Issue("u1", RoleDeveloper, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	hdr := func(alg string) map[string]any { return map[string]any{"alg": alg, "typ": "JWT", "kid": key.ID} }
	with := func(k string, v any) map[string]any { c := goodClaims(); c[k] = v; return c }
	without := func(k string) map[string]any { c := goodClaims(); delete(c, k); return c }

	// A same-kid key with another secret: the kid matches, the signature not.
	impostor := NewKeyRing(t0)
	impostor.Current.ID = key.ID
	forged, _, _ := impostor.Issue("u1", RoleAdmin, t0, 0)

	// The payload re-encoded with role admin, signature kept.
	p, _ := b64url.DecodeString(parts[1])
	var claims map[string]any
	_ = json.Unmarshal(p, &claims)
	claims["role"] = "admin"
	p, _ = json.Marshal(claims)
	tampered := parts[0] + "." + b64url.EncodeToString(p) + "." + parts[2]

	// HS512 signed properly with the right key: refused for its algorithm.
	hs512 := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims(goodClaims()))
	hs512.Header["kid"] = key.ID
	hs512Tok, err := hs512.SignedString(key.Secret)
	if err != nil {
		t.Fatal(err)
	}

	// The control: the hand-built token itself is accepted.
	if _, err := ring.Verify(handToken(t, hdr("HS256"), goodClaims(), key.Secret), t0); err != nil {
		t.Fatalf("hand-built HS256 token refused: %v", err)
	}

	for name, bad := range map[string]string{
		"empty":           "",
		"garbage":         "not.a.jwt",
		"two segments":    parts[0] + "." + parts[1],
		"truncated sig":   tok[:len(tok)-2],
		"wrong key":       forged,
		"tampered":        tampered,
		"alg none":        handToken(t, map[string]any{"alg": "none", "typ": "JWT"}, goodClaims(), nil),
		"alg none kid":    handToken(t, map[string]any{"alg": "none", "typ": "JWT", "kid": key.ID}, goodClaims(), nil),
		"alg None":        handToken(t, hdr("None"), goodClaims(), nil),
		"alg none signed": handToken(t, hdr("none"), goodClaims(), key.Secret),
		"alg hs256":       handToken(t, hdr("hs256"), goodClaims(), key.Secret),
		"alg HS384":       handToken(t, hdr("HS384"), goodClaims(), key.Secret),
		"alg HS512":       hs512Tok,
		"alg RS256":       handToken(t, hdr("RS256"), goodClaims(), key.Secret),
		"alg PS256":       handToken(t, hdr("PS256"), goodClaims(), key.Secret),
		"alg ES256":       handToken(t, hdr("ES256"), goodClaims(), key.Secret),
		"alg EdDSA":       handToken(t, hdr("EdDSA"), goodClaims(), key.Secret),
		"no alg":          handToken(t, map[string]any{"kid": key.ID}, goodClaims(), key.Secret),
		"unknown kid":     handToken(t, map[string]any{"alg": "HS256", "kid": "nope"}, goodClaims(), key.Secret),
		"no kid":          handToken(t, map[string]any{"alg": "HS256"}, goodClaims(), key.Secret),
		"numeric kid":     handToken(t, map[string]any{"alg": "HS256", "kid": 7}, goodClaims(), key.Secret),
		"wrong issuer":    handToken(t, hdr("HS256"), with("iss", "evil"), key.Secret),
		"no issuer":       handToken(t, hdr("HS256"), without("iss"), key.Secret),
		"no subject":      handToken(t, hdr("HS256"), without("sub"), key.Secret),
		"unknown role":    handToken(t, hdr("HS256"), with("role", "root"), key.Secret),
		"no role":         handToken(t, hdr("HS256"), without("role"), key.Secret),
		"no jti":          handToken(t, hdr("HS256"), without("jti"), key.Secret),
		"no exp":          handToken(t, hdr("HS256"), without("exp"), key.Secret),
		"no nbf":          handToken(t, hdr("HS256"), without("nbf"), key.Secret),
		"iat in future":   handToken(t, hdr("HS256"), with("iat", t0.Add(time.Hour).Unix()), key.Secret),
		"string exp":      handToken(t, hdr("HS256"), with("exp", "tomorrow"), key.Secret),
		"too long":        tok + strings.Repeat("A", maxTokenLength),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := ring.Verify(bad, t0)
			if c != nil || !errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("Verify = %+v, %v; want ErrTokenInvalid", c, err)
			}
		})
	}
	// A forged token must not be reported as merely expired.
	if _, err := ring.Verify(forged, t0.Add(24*time.Hour)); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("expired forged token: err = %v, want ErrTokenInvalid", err)
	}
}

func TestIssueRefuses(t *testing.T) {
	ring := NewKeyRing(t0)
	for name, tc := range map[string]struct {
		user string
		role Role
		ttl  time.Duration
	}{
		"no user":      {"", RoleAdmin, 0},
		"unknown role": {"u1", "root", 0},
		"empty role":   {"u1", "", 0},
		"negative ttl": {"u1", RoleAdmin, -time.Second},
		"ttl over max": {"u1", RoleAdmin, MaxAccessTTL + time.Second},
	} {
		if _, _, err := ring.Issue(tc.user, tc.role, t0, tc.ttl); !errors.Is(err, ErrBadClaims) {
			t.Errorf("%s: err = %v, want ErrBadClaims", name, err)
		}
	}
	if _, _, err := (KeyRing{}).Issue("u1", RoleAdmin, t0, 0); !errors.Is(err, ErrBadSigningKey) {
		t.Errorf("zero ring: err = %v, want ErrBadSigningKey", err)
	}
	short := KeyRing{Current: SigningKey{ID: "k", Secret: []byte("short")}}
	if _, _, err := short.Issue("u1", RoleAdmin, t0, 0); !errors.Is(err, ErrBadSigningKey) {
		t.Errorf("short key: err = %v, want ErrBadSigningKey", err)
	}
	if _, err := (KeyRing{}).Verify(handToken(t, map[string]any{"alg": "HS256", "kid": ""}, goodClaims(), nil), t0); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("zero ring verified a token: %v", err)
	}
}

func TestRotate(t *testing.T) {
	ring := NewKeyRing(t0)
	old := ring.Current
	tok, _, err := ring.Issue("u1", RoleOperator, t0, 0)
	if err != nil {
		t.Fatal(err)
	}

	t1 := t0.Add(5 * time.Minute)
	ring2 := ring.Rotate(t1)
	if ring2.Current.ID == old.ID || len(ring2.Previous) != 1 || ring2.Previous[0].ID != old.ID ||
		!ring2.Previous[0].RetiredAt.Equal(t1) {
		t.Fatalf("rotated ring = %+v", ring2)
	}
	if len(ring.Previous) != 0 || !ring.Current.RetiredAt.IsZero() {
		t.Error("Rotate changed the ring it was called on")
	}
	// Tokens of the previous key stay valid until they expire.
	if _, err := ring2.Verify(tok, t1.Add(time.Minute)); err != nil {
		t.Errorf("token of the previous key refused after rotation: %v", err)
	}
	// New tokens use the new key, which the old ring does not know.
	tok2, _, _ := ring2.Issue("u1", RoleOperator, t1, 0)
	if c, err := ring2.Verify(tok2, t1); err != nil || c.KeyID != ring2.Current.ID {
		t.Errorf("new token: %+v, %v", c, err)
	}
	if _, err := ring.Verify(tok2, t1); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("old ring accepted a token of a newer key: %v", err)
	}

	// A token the old key signs with an exp far beyond any real lifetime:
	// only the key's age can refuse it.
	longLived := handToken(t, map[string]any{"alg": "HS256", "kid": old.ID},
		func() map[string]any { c := goodClaims(); c["exp"] = t0.Add(48 * time.Hour).Unix(); return c }(), old.Secret)
	aged := t1.Add(MaxAccessTTL + Leeway + time.Second)
	if _, err := ring2.Verify(longLived, t1.Add(MaxAccessTTL)); err != nil {
		t.Errorf("previous key refused within its grace period: %v", err)
	}
	if _, err := ring2.Verify(longLived, aged); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("aged-out key still verifies without rotation: %v", err)
	}

	// A rotation after the grace period drops the key.
	ring3 := ring2.Rotate(aged)
	if len(ring3.Previous) != 1 || ring3.Previous[0].ID != ring2.Current.ID {
		t.Fatalf("aged-out key kept: previous = %+v", ring3.Previous)
	}
	if _, err := ring3.Verify(longLived, aged); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("dropped key verifies: %v", err)
	}
	// A rotation within the grace period keeps both previous keys.
	if ring4 := ring2.Rotate(t1.Add(time.Minute)); len(ring4.Previous) != 2 {
		t.Errorf("quick rotation kept %d previous keys, want 2", len(ring4.Previous))
	}
}

// Verify only reads the ring, so one ring serves many requests at once; run
// under -race this checks that.
func TestVerifyConcurrent(t *testing.T) {
	ring := NewKeyRing(t0).Rotate(t0)
	tok, _, err := ring.Issue("u1", RoleAdmin, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := ring.Verify(tok, t0)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
