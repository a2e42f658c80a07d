package security

import (
	"errors"
	"strings"
	"testing"
)

// testParams keep argon2 cheap (64 KiB, one pass); only
// TestHashPasswordDefaults pays for the real parameters.
var testParams = Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func TestHashPasswordRoundTrip(t *testing.T) {
	const pw = "tangerine-vortex-42"
	enc, err := HashPassword(pw, testParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("encoding %q does not record the parameters", enc)
	}
	ok, rehash, err := VerifyPassword(enc, pw)
	if err != nil || !ok {
		t.Fatalf("VerifyPassword = %v, %v; want ok", ok, err)
	}
	if !rehash {
		t.Error("a hash below the defaults must report needsRehash")
	}
	ok, rehash, err = VerifyPassword(enc, pw+"x")
	if err != nil || ok || rehash {
		t.Errorf("wrong password: got ok=%v rehash=%v err=%v", ok, rehash, err)
	}
	again, _ := HashPassword(pw, testParams)
	if again == enc {
		t.Error("two hashes of one password are equal: salt is not random")
	}
}

func TestHashPasswordDefaults(t *testing.T) {
	const pw = "tangerine-vortex-42"
	enc, err := HashPassword(pw, DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("default encoding %q", enc)
	}
	ok, rehash, err := VerifyPassword(enc, pw)
	if err != nil || !ok || rehash {
		t.Fatalf("VerifyPassword = %v, %v, %v; want true, false, nil", ok, rehash, err)
	}
	// The dummy hash must cost what a real one costs, so it must carry the
	// same parameters; timing itself is not measured (it would be flaky).
	p, salt, key, err := decodeHash(dummyHash)
	if err != nil || p != DefaultParams() || len(salt) != 16 || len(key) != 32 {
		t.Fatalf("dummyHash decodes to %+v, %v", p, err)
	}
	DummyVerify(pw) // must not panic
}

func TestHashPasswordRefuses(t *testing.T) {
	for _, p := range []Params{
		{},
		{Memory: 64, Time: 0, Threads: 1, SaltLen: 16, KeyLen: 32},
		{Memory: 64, Time: 1, Threads: 0, SaltLen: 16, KeyLen: 32},
		{Memory: 4, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32},
		{Memory: maxMemory + 1, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32},
		{Memory: 64, Time: 1, Threads: 1, SaltLen: 4, KeyLen: 32},
		{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 8},
	} {
		if _, err := HashPassword("tangerine-vortex-42", p); !errors.Is(err, ErrBadParams) {
			t.Errorf("HashPassword(%+v) err = %v, want ErrBadParams", p, err)
		}
	}
	if _, err := HashPassword(strings.Repeat("x", MaxPasswordBytes+1), testParams); !errors.Is(err, ErrPasswordTooLong) {
		t.Errorf("over-long password: err = %v", err)
	}
}

func TestVerifyPasswordTampered(t *testing.T) {
	const pw = "tangerine-vortex-42"
	enc, err := HashPassword(pw, testParams)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(enc, "$") // "", argon2id, v=19, params, salt, key
	salt, key := parts[4], parts[5]
	join := func(p ...string) string { return strings.Join(p, "$") }
	flip := func(s string) string { // change the first character, staying in the alphabet
		if s[0] == 'A' {
			return "B" + s[1:]
		}
		return "A" + s[1:]
	}

	// Well-formed but different: verification fails without an error.
	for name, bad := range map[string]string{
		"memory":  join("", "argon2id", "v=19", "m=65,t=1,p=1", salt, key),
		"time":    join("", "argon2id", "v=19", "m=64,t=2,p=1", salt, key),
		"threads": join("", "argon2id", "v=19", "m=64,t=1,p=2", salt, key),
		"salt":    join("", "argon2id", "v=19", "m=64,t=1,p=1", flip(salt), key),
		"key":     join("", "argon2id", "v=19", "m=64,t=1,p=1", salt, flip(key)),
	} {
		t.Run(name, func(t *testing.T) {
			ok, _, err := VerifyPassword(bad, pw)
			if ok || err != nil {
				t.Errorf("got ok=%v err=%v, want false, nil", ok, err)
			}
		})
	}

	// Malformed: an error wrapping ErrMalformedHash, never a panic.
	for name, bad := range map[string]string{
		"empty":          "",
		"argon2i":        join("", "argon2i", "v=19", "m=64,t=1,p=1", salt, key),
		"version 16":     join("", "argon2id", "v=16", "m=64,t=1,p=1", salt, key),
		"no version":     join("", "argon2id", "m=64,t=1,p=1", salt, key),
		"missing key":    join("", "argon2id", "v=19", "m=64,t=1,p=1", salt),
		"extra part":     join("", "argon2id", "v=19", "m=64,t=1,p=1", salt, key, "x"),
		"params order":   join("", "argon2id", "v=19", "t=1,m=64,p=1", salt, key),
		"missing param":  join("", "argon2id", "v=19", "m=64,t=1", salt, key),
		"leading zero":   join("", "argon2id", "v=19", "m=064,t=1,p=1", salt, key),
		"signed":         join("", "argon2id", "v=19", "m=+64,t=1,p=1", salt, key),
		"zero time":      join("", "argon2id", "v=19", "m=64,t=0,p=1", salt, key),
		"zero threads":   join("", "argon2id", "v=19", "m=64,t=1,p=0", salt, key),
		"huge threads":   join("", "argon2id", "v=19", "m=64,t=1,p=256", salt, key),
		"huge memory":    join("", "argon2id", "v=19", "m=4294967295,t=1,p=1", salt, key),
		"overflow":       join("", "argon2id", "v=19", "m=99999999999,t=1,p=1", salt, key),
		"padded salt":    join("", "argon2id", "v=19", "m=64,t=1,p=1", salt+"==", key),
		"bad base64":     join("", "argon2id", "v=19", "m=64,t=1,p=1", salt, "!!"+key[2:]),
		"short salt":     join("", "argon2id", "v=19", "m=64,t=1,p=1", salt[:4], key),
		"short key":      join("", "argon2id", "v=19", "m=64,t=1,p=1", salt, key[:8]),
		"truncated":      enc[:len(enc)/2],
		"trailing space": enc + " ",
	} {
		t.Run(name, func(t *testing.T) {
			ok, rehash, err := VerifyPassword(bad, pw)
			if ok || rehash || !errors.Is(err, ErrMalformedHash) {
				t.Errorf("got ok=%v rehash=%v err=%v, want ErrMalformedHash", ok, rehash, err)
			}
		})
	}
}

func TestVerifyPasswordOverLong(t *testing.T) {
	enc, err := HashPassword("tangerine-vortex-42", testParams)
	if err != nil {
		t.Fatal(err)
	}
	ok, _, err := VerifyPassword(enc, strings.Repeat("x", MaxPasswordBytes+1))
	if ok || err != nil {
		t.Errorf("got ok=%v err=%v, want false, nil", ok, err)
	}
}

func TestNeedsRehash(t *testing.T) {
	d := DefaultParams()
	for _, tc := range []struct {
		name string
		p    Params
		want bool
	}{
		{"defaults", d, false},
		{"stronger", Params{Memory: 2 * d.Memory, Time: 3, Threads: 2, SaltLen: 32, KeyLen: 64}, false},
		{"less memory", Params{Memory: d.Memory - 1, Time: d.Time, Threads: 1, SaltLen: 16, KeyLen: 32}, true},
		{"fewer passes", Params{Memory: d.Memory, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}, true},
		{"shorter salt", Params{Memory: d.Memory, Time: d.Time, Threads: 1, SaltLen: 8, KeyLen: 32}, true},
		{"shorter key", Params{Memory: d.Memory, Time: d.Time, Threads: 1, SaltLen: 16, KeyLen: 16}, true},
		{"more lanes only", Params{Memory: d.Memory, Time: d.Time, Threads: 4, SaltLen: 16, KeyLen: 32}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.weakerThan(d); got != tc.want {
				t.Errorf("weakerThan(defaults) = %v, want %v", got, tc.want)
			}
		})
	}
}
