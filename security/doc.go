// Package security holds the credential primitives every Otherix process
// shares: argon2id password hashing and password rules, the formats of API,
// refresh and join tokens, HS256 access JWTs with a rotating key ring, the
// static RBAC permission matrix, and the cluster PKI (CA, server and client
// certificates, node CSR signing under a strict policy, fingerprints).
//
// It is a leaf (DESIGN §2): it imports only the standard library, two
// cryptography modules and messages, so the API, the agent and the CLI can all
// use it. It does no I/O except WriteKeyFile (a private key written 0600,
// atomically) and keeps no state beyond what callers hand it;
// storage (etcd), HTTP mapping and the CLI live elsewhere. Errors that are not
// domain errors are sentinels in errors.go, which the HTTP layer maps to
// statuses in its one table.
package security
