package security

import (
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are the argon2id cost parameters. They are written into every hash
// (PHC string format), so raising the defaults later only makes old hashes
// report needsRehash; they keep verifying.
type Params struct {
	Memory  uint32 // memory in KiB
	Time    uint32 // passes over the memory
	Threads uint8  // lanes (parallelism)
	SaltLen uint32 // random salt length in bytes
	KeyLen  uint32 // derived key length in bytes
}

// DefaultParams returns the parameters new hashes use: argon2id with
// m=19 MiB (19456 KiB), t=2, p=1, the minimum configuration of the OWASP
// Password Storage Cheat Sheet, with a 16-byte salt and a 32-byte key. This
// costs a few tens of milliseconds per login on one core, which bounds the
// CPU an attacker can burn through the login endpoint. To raise it, change
// these numbers: stored hashes then report needsRehash on the next login.
func DefaultParams() Params {
	return Params{Memory: 19456, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}
}

// Limits on parameters, checked when hashing and when decoding a stored hash,
// so a corrupt or hostile record cannot make argon2 panic (t=0, p=0) or
// allocate without bound.
const (
	minSaltLen = 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 64
	maxMemory  = 1 << 20 // KiB, 1 GiB
	maxTime    = 64
)

// validate reports whether p is within the accepted range.
func (p Params) validate() error {
	switch {
	case p.Time < 1 || p.Time > maxTime,
		p.Threads < 1,
		p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory,
		p.SaltLen < minSaltLen || p.SaltLen > maxSaltLen,
		p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("%w: m=%d t=%d p=%d salt=%d key=%d", ErrBadParams,
			p.Memory, p.Time, p.Threads, p.SaltLen, p.KeyLen)
	}
	return nil
}

// weakerThan reports whether p is below q in any dimension that makes a hash
// cheaper to attack. Threads are not compared: lanes change the layout of the
// computation, not the memory or time an attacker must spend.
func (p Params) weakerThan(q Params) bool {
	return p.Memory < q.Memory || p.Time < q.Time || p.SaltLen < q.SaltLen || p.KeyLen < q.KeyLen
}

// phcPrefix starts every hash: the algorithm and the argon2 version (0x13).
var phcPrefix = "$argon2id$v=" + strconv.Itoa(argon2.Version) + "$"

// b64 is the PHC encoding: standard alphabet, no padding, and strict so that
// a hash has exactly one spelling.
var b64 = base64.RawStdEncoding.Strict()

// HashPassword hashes pw with a fresh random salt and returns the PHC string
// $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<key>. It refuses
// parameters out of range and passwords over MaxPasswordBytes; it does not
// apply the other password rules (see ValidatePassword).
func HashPassword(pw string, p Params) (string, error) {
	if err := p.validate(); err != nil {
		return "", err
	}
	if len(pw) > MaxPasswordBytes {
		return "", ErrPasswordTooLong
	}
	salt := randomBytes(int(p.SaltLen))
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return encodeHash(p, salt, key), nil
}

// encodeHash writes the PHC string.
func encodeHash(p Params, salt, key []byte) string {
	return fmt.Sprintf("%sm=%d,t=%d,p=%d$%s$%s", phcPrefix, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// decodeHash parses a PHC string strictly: one algorithm, one version, the
// three parameters in order with canonical decimals, and in-range lengths.
func decodeHash(encoded string) (Params, []byte, []byte, error) {
	rest, ok := strings.CutPrefix(encoded, phcPrefix)
	if !ok {
		return Params{}, nil, nil, fmt.Errorf("%w: not argon2id v=19", ErrMalformedHash)
	}
	parts := strings.Split(rest, "$")
	if len(parts) != 3 {
		return Params{}, nil, nil, fmt.Errorf("%w: want params, salt and key", ErrMalformedHash)
	}
	fields := strings.Split(parts[0], ",")
	if len(fields) != 3 {
		return Params{}, nil, nil, fmt.Errorf("%w: want m, t and p", ErrMalformedHash)
	}
	var nums [3]uint64
	for i, name := range []string{"m=", "t=", "p="} {
		digits, ok := strings.CutPrefix(fields[i], name)
		n, err := parseCanonical(digits)
		if !ok || err != nil {
			return Params{}, nil, nil, fmt.Errorf("%w: bad %s", ErrMalformedHash, strings.TrimSuffix(name, "="))
		}
		nums[i] = n
	}
	salt, err := b64.DecodeString(parts[1])
	if err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: salt does not decode", ErrMalformedHash)
	}
	key, err := b64.DecodeString(parts[2])
	if err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: key does not decode", ErrMalformedHash)
	}
	if nums[0] > maxMemory || nums[1] > maxTime || nums[2] > 255 {
		return Params{}, nil, nil, fmt.Errorf("%w: %w", ErrMalformedHash, ErrBadParams)
	}
	p := Params{Memory: uint32(nums[0]), Time: uint32(nums[1]), Threads: uint8(nums[2]),
		SaltLen: uint32(len(salt)), KeyLen: uint32(len(key))}
	if err := p.validate(); err != nil {
		return Params{}, nil, nil, fmt.Errorf("%w: %w", ErrMalformedHash, err)
	}
	return p, salt, key, nil
}

// parseCanonical parses a decimal without sign or leading zeros (PHC form).
func parseCanonical(s string) (uint64, error) {
	// ParseUint already refuses signs and underscores in base 10.
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseUint(s, 10, 32)
}

// VerifyPassword checks pw against a hash from HashPassword in constant time.
// needsRehash is true, only when ok, if the hash was made with parameters
// below DefaultParams: the caller should then store HashPassword(pw,
// DefaultParams()) while it holds the plaintext. A hash that does not decode
// is an error wrapping ErrMalformedHash, never a panic.
func VerifyPassword(encoded, pw string) (ok bool, needsRehash bool, err error) {
	p, salt, want, err := decodeHash(encoded)
	if err != nil {
		return false, false, err
	}
	// No stored password can be this long (HashPassword refuses it), so
	// skip the work; DummyVerify does the same, keeping timing equal.
	if len(pw) > MaxPasswordBytes {
		return false, false, nil
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return false, false, nil
	}
	return true, p.weakerThan(DefaultParams()), nil
}

// dummyHash has the default parameters and an all-zero salt and key. No
// password derives an all-zero key in practice, and nothing depends on it:
// only the cost of checking matters.
var dummyHash = encodeHash(DefaultParams(), make([]byte, DefaultParams().SaltLen), make([]byte, DefaultParams().KeyLen))

// DummyVerify spends the same time as VerifyPassword on a hash with the
// default parameters, and always fails. Call it when the account does not
// exist so that the login answer's timing does not reveal which accounts
// exist.
func DummyVerify(pw string) {
	_, _, _ = VerifyPassword(dummyHash, pw)
}
