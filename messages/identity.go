package messages

import "time"

// Principal is who a request acts for, established from its bearer token.
type Principal struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	// Role is the role the request acts with: the user's, or the lower role an
	// API token was created with.
	Role string `json:"role"`
	// TokenID is set when the request authenticated with an otx_ API token.
	TokenID string `json:"token_id,omitempty"`
}

// LoginRequest is the body of POST /v1/auth/login.
type LoginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// RefreshRequest is the body of POST /v1/auth/refresh and /v1/auth/logout.
type RefreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

// TokenPair answers a login or a refresh (DESIGN §9 wire shape).
type TokenPair struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"` // seconds until the access token expires
	TokenType    string `json:"token_type"` // always "Bearer"
}

// CreateUserRequest is the body of POST /v1/users (admin).
type CreateUserRequest struct {
	Email       string `json:"email"`
	DisplayName string `json:"display_name,omitempty"`
	Role        string `json:"role"`
	Password    string `json:"password"`
}

// UpdateMeRequest is the body of PATCH /v1/users/me. Changing the password
// needs the current one.
type UpdateMeRequest struct {
	DisplayName     *string `json:"display_name,omitempty"`
	CurrentPassword string  `json:"current_password,omitempty"`
	NewPassword     string  `json:"new_password,omitempty"`
}

// SetRoleRequest is the body of PUT /v1/users/{id}/role (admin).
type SetRoleRequest struct {
	Role string `json:"role"`
}

// CreateAPITokenRequest is the body of POST /v1/tokens. Role defaults to the
// caller's and may not exceed it; TTL (a Go duration such as "720h") is
// optional, no TTL meaning the token does not expire.
type CreateAPITokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role,omitempty"`
	TTL  string `json:"ttl,omitempty"`
}

// CreatedAPIToken answers POST /v1/tokens: the only time the token is shown.
type CreatedAPIToken struct {
	Token    string       `json:"token"`
	APIToken APITokenView `json:"api_token"`
}

// AuditEntry records one security-relevant event: who did what, when, with
// which result. Entries are kept in etcd and removed after their retention.
type AuditEntry struct {
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor"`            // user id, or the email tried for a failed login, or "anonymous"
	Action    string    `json:"action"`           // e.g. "POST /v1/vms", "auth.login", "auth.refresh_reuse"
	Target    string    `json:"target,omitempty"` // resource id or name, when there is one
	Result    string    `json:"result"`           // "ok", "denied", "failed", or an error code
	Source    string    `json:"source,omitempty"` // client address
	RequestID string    `json:"request_id,omitempty"`
	// Count, when above zero, says the entry stands for that many requests
	// of one client address (Source), one action and one result, made
	// without valid credentials within one window after a first one that
	// has its own entry: such failures are folded so an anonymous client
	// cannot flood the log.
	Count int `json:"count,omitempty"`
}
