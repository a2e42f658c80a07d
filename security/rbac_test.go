package security

import (
	"testing"
)

// allResources and allVerbs are every name of the issue, so pairs without a
// rule (vm cordon, audit delete…) are checked to be None too.
var (
	allResources = []string{"vm", "task", "node", "network", "pool", "volume", "settings", "user", "token", "audit", "join_token", "replica", "debug", "image"}
	allVerbs     = []string{"read", "list", "create", "update", "delete", "start", "stop", "console", "cancel", "cordon", "drain", "scan"}
)

// wantMatrix is the documented table, written out independently of rules:
// one letter per role in the order admin, operator, developer, viewer
// (A any, O own, - none). A pair missing here has no rule.
var wantMatrix = map[string]map[string]string{
	"vm": {
		"read": "AAOO", "list": "AAOO", "create": "AOO-", "update": "AOO-", "delete": "AOO-",
		"start": "AAO-", "stop": "AAO-", "console": "AAO-",
	},
	"task":       {"read": "AAOO", "list": "AAOO", "cancel": "AAO-"},
	"node":       {"read": "AAAA", "list": "AAAA", "create": "A---", "update": "A---", "delete": "A---", "cordon": "AA--", "drain": "AA--"},
	"network":    {"read": "AAAA", "list": "AAAA", "create": "A---", "update": "A---", "delete": "A---"},
	"pool":       {"read": "AAAA", "list": "AAAA", "create": "A---", "update": "A---", "delete": "A---", "scan": "AA--"},
	"volume":     {"read": "AAOO", "list": "AAOO", "create": "AOO-", "update": "AOO-", "delete": "AOO-"},
	"settings":   {"read": "A---", "update": "A---"},
	"user":       {"read": "AOOO", "list": "A---", "create": "A---", "update": "AOOO", "delete": "A---"},
	"token":      {"read": "AOOO", "list": "AOOO", "create": "AOOO", "delete": "AOOO"},
	"audit":      {"read": "A---", "list": "A---"},
	"join_token": {"read": "A---", "list": "A---", "create": "A---", "delete": "A---"},
	"replica":    {"list": "A---", "delete": "A---"},
	"debug":      {"read": "A---"},
	"image":      {"list": "A---", "delete": "A---"},
}

func scopeOf(t *testing.T, c byte) Scope {
	switch c {
	case 'A':
		return ScopeAny
	case 'O':
		return ScopeOwn
	case '-':
		return ScopeNone
	}
	t.Fatalf("bad scope letter %q", c)
	return ScopeNone
}

func TestAllowedMatrix(t *testing.T) {
	m := Matrix()
	for i, role := range Roles() {
		for _, res := range allResources {
			for _, verb := range allVerbs {
				want := ScopeNone
				row, hasRule := wantMatrix[res][verb]
				if hasRule {
					want = scopeOf(t, row[i])
				}
				if got := Allowed(role, res, verb); got != want {
					t.Errorf("Allowed(%s, %s, %s) = %s, want %s", role, res, verb, got, want)
				}
				got, inMatrix := m[role][res][verb]
				if inMatrix != hasRule || got != want {
					t.Errorf("Matrix()[%s][%s][%s] = %s (present %v), want %s (present %v)",
						role, res, verb, got, inMatrix, want, hasRule)
				}
			}
		}
	}
	// Nothing outside the named resources and verbs.
	for role, resources := range m {
		for res, verbs := range resources {
			for verb := range verbs {
				if _, ok := wantMatrix[res][verb]; !ok {
					t.Errorf("Matrix has an undocumented rule %s %s %s", role, res, verb)
				}
			}
		}
	}
	if len(m) != 4 {
		t.Errorf("Matrix has %d roles, want 4", len(m))
	}
}

// Properties the table must keep whatever is added to it later.
func TestMatrixInvariants(t *testing.T) {
	roles := Roles()
	for _, r := range rules {
		if r.scopes[0] != ScopeAny {
			t.Errorf("admin lacks any on %s %s", r.resource, r.verb)
		}
		// A higher role never has less than a lower one.
		for i := 1; i < len(roles); i++ {
			if r.scopes[i] > r.scopes[i-1] {
				t.Errorf("%s %s: %s has more than %s", r.resource, r.verb, roles[i], roles[i-1])
			}
		}
		// Viewers write nothing but their own user record and tokens.
		writes := r.verb != VerbRead && r.verb != VerbList
		if v := r.scopes[3]; writes && v != ScopeNone && r.resource != ResourceUser && r.resource != ResourceToken {
			t.Errorf("viewer may %s %s", r.verb, r.resource)
		}
		// Only admin reaches other users, settings, audit and join tokens.
		switch r.resource {
		case ResourceUser, ResourceToken, ResourceSettings, ResourceAudit, ResourceJoinToken:
			for i := 1; i < len(roles); i++ {
				if r.scopes[i] == ScopeAny {
					t.Errorf("%s has any on %s %s", roles[i], r.resource, r.verb)
				}
			}
		}
	}
}

func TestAllowedUnknown(t *testing.T) {
	for _, tc := range []struct {
		role           Role
		resource, verb string
	}{
		{"root", "vm", "read"},
		{"", "vm", "read"},
		{"Admin", "vm", "read"},
		{RoleAdmin, "vms", "read"},
		{RoleAdmin, "", "read"},
		{RoleAdmin, "vm", "reboot"},
		{RoleAdmin, "vm", ""},
		{RoleAdmin, "VM", "READ"},
		{RoleAdmin, "audit", "delete"},
	} {
		if got := Allowed(tc.role, tc.resource, tc.verb); got != ScopeNone {
			t.Errorf("Allowed(%q, %q, %q) = %s, want none", tc.role, tc.resource, tc.verb, got)
		}
	}
}

func TestMatrixIsACopy(t *testing.T) {
	m := Matrix()
	m[RoleViewer][ResourceVM][VerbDelete] = ScopeAny
	delete(m[RoleAdmin], ResourceVM)
	if Allowed(RoleViewer, ResourceVM, VerbDelete) != ScopeNone || Allowed(RoleAdmin, ResourceVM, VerbRead) != ScopeAny {
		t.Error("changing Matrix() changed the rules")
	}
}

func TestScope(t *testing.T) {
	for _, tc := range []struct {
		s               Scope
		name            string
		owner, nonOwner bool
	}{
		{ScopeNone, "none", false, false},
		{ScopeOwn, "own", true, false},
		{ScopeAny, "any", true, true},
		{Scope(42), "none", false, false},
	} {
		if tc.s.String() != tc.name || tc.s.Permits(true) != tc.owner || tc.s.Permits(false) != tc.nonOwner {
			t.Errorf("%d: String %q Permits(true) %v Permits(false) %v", tc.s, tc.s, tc.s.Permits(true), tc.s.Permits(false))
		}
	}
}
