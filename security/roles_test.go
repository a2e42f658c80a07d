package security

import (
	"testing"

	"github.com/otherix/otherix/messages"
)

func TestParseRole(t *testing.T) {
	for _, r := range Roles() {
		got, err := ParseRole(string(r))
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, bad := range []string{"", "root", "Admin", " admin", "admin\n", "superuser"} {
		got, err := ParseRole(bad)
		if got != "" || messages.KindOf(err) != messages.KindInvalid {
			t.Errorf("ParseRole(%q) = %q, %v; want KindInvalid", bad, got, err)
		}
	}
}

func TestRoleAtMost(t *testing.T) {
	roles := Roles() // highest first
	for i, r := range roles {
		for j, other := range roles {
			if got, want := r.AtMost(other), i >= j; got != want {
				t.Errorf("%s.AtMost(%s) = %v, want %v", r, other, got, want)
			}
		}
		if r.AtMost("root") || Role("root").AtMost(r) || Role("").AtMost(r) {
			t.Errorf("an unknown role compares with %s", r)
		}
	}
}
