//go:build etcd

package identity

// Test hooks. They live in a _test file, so production builds carry none.

// JWTVerifiesForTest counts access-token signature checks (cache misses).
func (s *Service) JWTVerifiesForTest() int64 { return s.jwtVerifies.Load() }

// APITokenReadsForTest counts API token reads from etcd.
func (s *Service) APITokenReadsForTest() int64 { return s.tokenReads.Load() }

// HashesPeakForTest is the most password hashes that ran at once.
func (s *Service) HashesPeakForTest() int64 { return s.hashesPeak.Load() }
