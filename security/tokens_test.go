package security

import (
	"errors"
	"strings"
	"testing"
)

func TestAPIToken(t *testing.T) {
	tok, id, hash := NewAPIToken()
	if !strings.HasPrefix(tok, "otx_") || len(tok) != 4+TokenIDLen+1+TokenSecretLen {
		t.Fatalf("token %q has the wrong shape", tok)
	}
	gotID, secret, err := ParseAPIToken(tok)
	if err != nil || gotID != id {
		t.Fatalf("ParseAPIToken = %q, %v; want id %q", gotID, err, id)
	}
	if !TokenMatches(hash, secret) {
		t.Error("stored hash does not match the secret")
	}
	if len(hash) != 64 || strings.Contains(hash, secret) {
		t.Errorf("hash %q is not hex SHA-256", hash)
	}
	_, other, _ := NewAPIToken()
	if other == id {
		t.Error("two tokens share an id")
	}
}

func TestTokenMatches(t *testing.T) {
	_, secret, _ := ParseAPIToken(mustAPIToken(t))
	hash := HashToken(secret)
	other := secret[:len(secret)-1] + "x"
	if other == secret {
		other = secret[:len(secret)-1] + "y"
	}
	for name, tc := range map[string]struct {
		hash, secret string
		want         bool
	}{
		"match":          {hash, secret, true},
		"other secret":   {hash, other, false},
		"empty secret":   {hash, "", false},
		"empty hash":     {"", secret, false},
		"uppercase hash": {strings.ToUpper(hash), secret, false},
		"truncated hash": {hash[:63], secret, false},
	} {
		if got := TokenMatches(tc.hash, tc.secret); got != tc.want {
			t.Errorf("%s: TokenMatches = %v, want %v", name, got, tc.want)
		}
	}
}

func mustAPIToken(t *testing.T) string {
	t.Helper()
	tok, _, _ := NewAPIToken()
	return tok
}

func TestParseAPITokenRefuses(t *testing.T) {
	tok := mustAPIToken(t)
	id, secret := tok[4:4+TokenIDLen], tok[4+TokenIDLen+1:]
	ref, _, _ := NewRefreshToken()
	for name, bad := range map[string]string{
		"empty":             "",
		"prefix only":       "otx_",
		"truncated":         tok[:len(tok)-1],
		"one extra":         tok + "a",
		"no prefix":         tok[4:],
		"uppercase prefix":  "OTX_" + tok[4:],
		"refresh token":     ref,
		"refresh prefix":    "otr_" + tok[4:],
		"join prefix":       "otxj_" + tok[4:],
		"wrong separator":   "otx_" + id + "." + secret,
		"short id":          "otx_" + id[1:] + "_" + secret + "a",
		"bad char":          "otx_" + id + "_" + secret[:10] + "+" + secret[11:],
		"underscore inside": "otx_" + id + "_" + secret[:10] + "_" + secret[11:],
		"non-ascii":         "otx_" + id + "_" + secret[:40] + "é",
		"trailing newline":  tok[:len(tok)-1] + "\n",
		"bearer":            "Bearer " + tok,
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := ParseAPIToken(bad)
			if !errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("err = %v, want ErrTokenInvalid", err)
			}
			if strings.Contains(err.Error(), secret[:20]) {
				t.Error("error text contains the secret")
			}
		})
	}
}

func TestRefreshToken(t *testing.T) {
	tok, family, hash := NewRefreshToken()
	gotFamily, secret, err := ParseRefreshToken(tok)
	if err != nil || gotFamily != family || !TokenMatches(hash, secret) {
		t.Fatalf("ParseRefreshToken(%q) = %q, %v", tok, gotFamily, err)
	}
	next, nextHash, err := RotateRefreshToken(family)
	if err != nil {
		t.Fatal(err)
	}
	nextFamily, nextSecret, err := ParseRefreshToken(next)
	if err != nil || nextFamily != family {
		t.Fatalf("rotated token left the family: %q, %v", nextFamily, err)
	}
	if nextSecret == secret || TokenMatches(nextHash, secret) {
		t.Error("rotation must change the secret")
	}
	for _, bad := range []string{"", "short", family + "x", strings.Repeat("_", TokenIDLen)} {
		if _, _, err := RotateRefreshToken(bad); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("RotateRefreshToken(%q) err = %v", bad, err)
		}
	}
	for name, bad := range map[string]string{
		"api token": mustAPIToken(t),
		"truncated": tok[:len(tok)-3],
		"prefix":    "otx_" + tok[4:],
	} {
		if _, _, err := ParseRefreshToken(bad); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("%s: err = %v, want ErrTokenInvalid", name, err)
		}
	}
}

func TestJoinToken(t *testing.T) {
	const fp = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
	tok, id, hash, err := NewJoinToken(fp)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "otxj_"+id+".") || !strings.HasSuffix(tok, "@"+strings.ToLower(fp)) {
		t.Fatalf("token %q has the wrong shape", tok)
	}
	jt, err := ParseJoinToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	if jt.ID != id || jt.CAFingerprint != strings.ToLower(fp) || !TokenMatches(hash, jt.Secret) {
		t.Fatalf("ParseJoinToken = %+v", jt)
	}

	head, lower, _ := strings.Cut(tok, "@")
	for name, bad := range map[string]string{
		"empty":             "",
		"no fingerprint":    head,
		"empty fingerprint": head + "@",
		"short fingerprint": head + "@" + lower[1:],
		"long fingerprint":  tok + "0",
		"upper fingerprint": head + "@" + fp,
		"non-hex":           head + "@" + "g" + lower[1:],
		"two ats":           head + "@" + lower + "@" + lower,
		"api prefix":        "otx_" + tok[5:],
		"no prefix":         tok[5:],
		"underscore sep":    strings.Replace(tok, ".", "_", 1),
		"truncated secret":  head[:len(head)-1] + "@" + lower,
		"api token":         mustAPIToken(t),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseJoinToken(bad); !errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("err = %v, want ErrTokenInvalid", err)
			}
		})
	}
	for _, bad := range []string{"", "abc", fp[:63], fp + "0", "sha256:" + fp} {
		if _, _, _, err := NewJoinToken(bad); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("NewJoinToken(%q) err = %v", bad, err)
		}
	}
}

func TestRandomBase62(t *testing.T) {
	s := randomBase62(10000)
	if len(s) != 10000 || !isBase62(s) {
		t.Fatal("wrong length or alphabet")
	}
	for i := 0; i < len(base62); i++ {
		if !strings.Contains(s, base62[i:i+1]) {
			t.Errorf("character %q never drawn in 10000", base62[i])
		}
	}
	if isBase62("") || isBase62("a_b") || isBase62("ab=") {
		t.Error("isBase62 accepts a non-base62 string")
	}
}

// A replica join token has its own prefix, and neither parser accepts the
// other kind: a leaked node token cannot add a Raft member, nor the reverse.
func TestReplicaJoinToken(t *testing.T) {
	const fp = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	tok, id, hash, err := NewReplicaJoinToken(fp)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "otxr_"+id+".") || !strings.HasSuffix(tok, "@"+fp) {
		t.Fatalf("token %q has the wrong shape", tok)
	}
	jt, err := ParseReplicaJoinToken(tok)
	if err != nil || jt.ID != id || jt.CAFingerprint != fp || !TokenMatches(hash, jt.Secret) {
		t.Fatalf("ParseReplicaJoinToken = %+v, %v", jt, err)
	}
	if _, err := ParseJoinToken(tok); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("ParseJoinToken(replica token) err = %v, want ErrTokenInvalid", err)
	}
	node, _, _, _ := NewJoinToken(fp)
	if _, err := ParseReplicaJoinToken(node); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("ParseReplicaJoinToken(node token) err = %v, want ErrTokenInvalid", err)
	}
}
