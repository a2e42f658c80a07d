package enroll

import (
	"github.com/otherix/otherix/http/apierror"

	"errors"
	"fmt"
)

// Sentinels. Returned errors wrap them with a short reason; none carries the
// join token's secret or key material.
var (
	// ErrBadOptions reports options no enrollment can start from: a missing
	// or non-https server URL, an empty state dir, a node name that is not a
	// DNS label. It is returned before any network call.
	ErrBadOptions = errors.New("enroll: bad options")
	// ErrFingerprintMismatch reports a server whose CA is not the one the join
	// token pins; see *FingerprintMismatchError for both fingerprints.
	ErrFingerprintMismatch = errors.New("enroll: ca fingerprint mismatch")
	// ErrUntrustedServer reports a server whose TLS certificate does not chain
	// to the pinned CA (or does not name the host dialled), or a CA answer
	// that is not a usable CA certificate.
	ErrUntrustedServer = errors.New("enroll: server not trusted")
	// ErrBadResponse reports an enrollment answer that cannot be used: not
	// JSON, a certificate that does not chain to the CA, is not for our key
	// or does not name our node.
	ErrBadResponse = errors.New("enroll: bad response from server")
	// ErrIdentityConflict reports a state dir that already holds an identity
	// for another server or node name, which Bootstrap replaces only with
	// Options.Force.
	ErrIdentityConflict = errors.New("enroll: state dir holds another identity")
	// ErrNotEnrolled reports a state dir without an agent.yaml: bootstrap has
	// not completed there.
	ErrNotEnrolled = errors.New("enroll: not enrolled")
	// ErrInvalidState reports a state dir whose files do not load or do not
	// agree with each other (key and certificate, CN and node name, CA and
	// its recorded fingerprint).
	ErrInvalidState = errors.New("enroll: invalid state dir")
)

// FingerprintMismatchError is the trust-on-first-use refusal: the CA the
// server presented is not the one the join token pins. errors.Is matches
// ErrFingerprintMismatch.
type FingerprintMismatchError struct {
	Presented string // SHA-256 of the CA certificate GET /v1/ca returned
	Pinned    string // SHA-256 carried by the join token
}

func (e *FingerprintMismatchError) Error() string {
	return fmt.Sprintf("ca fingerprint mismatch: server presented %s, join token pins %s", e.Presented, e.Pinned)
}

// Is matches ErrFingerprintMismatch.
func (e *FingerprintMismatchError) Is(target error) bool { return target == ErrFingerprintMismatch }

// Error codes the enrollment endpoint answers with (the API's error
// envelope). They are the API's stable codes, repeated here so callers can
// branch on them with errors.Is(err, &ServerError{Code: CodeInvalidJoinToken}).
const (
	CodeInvalidJoinToken   = "invalid_join_token"    // 401: unknown, used, expired or revoked
	CodeNodeNameNotAllowed = "node_name_not_allowed" // 403: the token is bound to another name
	CodeNodeNameConflict   = "node_name_conflict"    // 409: another identity holds the name
	CodeCSRPolicy          = "csr_policy"            // 400: details.reason says why
)

// ServerError is a refusal by the control plane, decoded from its error
// envelope; errors.Is matches another *ServerError by Code.
type ServerError = apierror.Error
