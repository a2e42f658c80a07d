package security

import "crypto/rand"

// base62 is the token alphabet: letters and digits only, so a token survives
// double-click selection, URLs and shells, and '_', '.' and '@' stay free as
// separators.
const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomBase62 returns n characters drawn uniformly from base62. Bytes of 248
// or more are rejected (248 = 4*62) so that every character is equally
// likely; n characters carry n*log2(62) ≈ 5.95n bits.
func randomBase62(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4+8)
	for len(out) < n {
		// crypto/rand.Read never fails (it crashes the process instead).
		_, _ = rand.Read(buf)
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			out = append(out, base62[b%62])
			if len(out) == n {
				break
			}
		}
	}
	return string(out)
}

// isBase62 reports whether s is non-empty and uses only the base62 alphabet.
func isBase62(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// randomBytes returns n bytes from crypto/rand.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
