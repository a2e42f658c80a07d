package enrollment

import "github.com/otherix/otherix/messages"

// errInvalidJoinToken is the one answer to every join-token problem: unknown,
// used, revoked, expired, a wrong secret or a wrong CA fingerprint all look
// alike to the caller. The log says which it was.
var errInvalidJoinToken = &messages.Error{Kind: messages.KindUnauthenticated, Code: "invalid_join_token",
	Message: "the join token is invalid, expired or already used"}

// Node certificate refusals (heartbeats, renewals). Each is logged with the
// node name and the reason.
var (
	// ErrUnknownNode refuses a certificate that names no enrolled node; the
	// gateway answers it too when a node's actor finds the node deleted.
	ErrUnknownNode = &messages.Error{Kind: messages.KindUnauthenticated, Code: "unknown_node",
		Message: "the client certificate names no enrolled node"}
	errCertNotRecorded = &messages.Error{Kind: messages.KindUnauthenticated, Code: "certificate_not_recorded",
		Message: "the client certificate is not the one recorded for this node"}
	errUntrustedCert = &messages.Error{Kind: messages.KindUnauthenticated, Code: "untrusted_certificate",
		Message: "the client certificate is not a node certificate of this cluster"}
	errNotNodeCert = &messages.Error{Kind: messages.KindUnauthenticated, Code: "not_node_certificate",
		Message: "the client certificate is not a node certificate"}
)

// csrPolicy refuses a CSR the node certificate policy does not allow.
func csrPolicy(reason string) *messages.Error {
	return &messages.Error{Kind: messages.KindInvalid, Code: "csr_policy",
		Message: "the certificate request breaks the node certificate policy: " + reason,
		Details: map[string]any{"reason": reason}}
}

// invalidTTL reports a join token lifetime that does not parse or is out of
// range (the same code and shape as an API token's).
func invalidTTL(msg string) *messages.Error {
	return &messages.Error{Kind: messages.KindInvalid, Code: "invalid_ttl", Message: "ttl: " + msg,
		Details: map[string]any{"field": "ttl"}}
}
