package security

import "github.com/otherix/otherix/messages"

// Role is one of the four fixed roles. Roles are ordered: admin > operator >
// developer > viewer.
type Role string

// The roles. Their string values are stored with users and tokens and put in
// JWTs, so never rename one.
const (
	RoleAdmin     Role = "admin"
	RoleOperator  Role = "operator"
	RoleDeveloper Role = "developer"
	RoleViewer    Role = "viewer"
)

// Roles returns every role, highest first.
func Roles() []Role {
	return []Role{RoleAdmin, RoleOperator, RoleDeveloper, RoleViewer}
}

// rank orders roles; 0 means unknown.
func (r Role) rank() int {
	switch r {
	case RoleAdmin:
		return 4
	case RoleOperator:
		return 3
	case RoleDeveloper:
		return 2
	case RoleViewer:
		return 1
	}
	return 0
}

// Valid reports whether r is one of the four roles.
func (r Role) Valid() bool { return r.rank() > 0 }

// ParseRole parses a role name exactly (lowercase, no spaces). An unknown
// name is a domain error (KindInvalid, code invalid_field, field "role").
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.Valid() {
		return r, nil
	}
	return "", messages.Invalid("role", "unknown role %q: want admin, operator, developer or viewer", s)
}

// AtMost reports whether r is the same as or lower than other, as when a
// user creates an API token with their own role or a lower one. It is false
// if either role is unknown, so an unknown role never passes a check.
func (r Role) AtMost(other Role) bool {
	return r.Valid() && other.Valid() && r.rank() <= other.rank()
}
