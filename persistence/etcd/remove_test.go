package etcd

import (
	"errors"
	"testing"
)

// TestRemovalCheck: a learner always goes; a voter only if the voters left
// keep a healthy quorum, unless forced; the only voter never.
func TestRemovalCheck(t *testing.T) {
	v := func(id uint64, healthy bool) MemberInfo {
		return MemberInfo{ID: id, Name: string(rune('a' + id)), Role: RoleVoter, Healthy: healthy}
	}
	l := func(id uint64, name string) MemberInfo {
		return MemberInfo{ID: id, Name: name, Role: RoleLearner}
	}
	three := []MemberInfo{v(1, true), v(2, true), v(3, true)}
	oneDown := []MemberInfo{v(1, true), v(2, true), v(3, false)}
	twoDown := []MemberInfo{v(1, true), v(2, false), v(3, false)}
	five := []MemberInfo{v(1, true), v(2, true), v(3, true), v(4, false), v(5, false)}
	for _, c := range []struct {
		name    string
		members []MemberInfo
		id      uint64
		force   bool
		want    error
	}{
		{"healthy voter of three", three, 1, false, nil},
		{"the down voter of three", oneDown, 3, false, nil},
		{"a healthy voter while another is down", oneDown, 1, false, ErrQuorumAtRisk},
		{"same, forced", oneDown, 1, true, nil},
		{"a down voter while another is down", twoDown, 3, false, ErrQuorumAtRisk},
		{"a healthy voter of five with two down", five, 1, false, ErrQuorumAtRisk},
		{"a down voter of five with two down", five, 5, false, nil},
		{"the only voter", []MemberInfo{v(1, true), l(2, "b")}, 1, true, ErrLastVoter},
		{"a started learner", append([]MemberInfo{l(9, "d")}, twoDown...), 9, false, nil},
		{"a learner never started", append([]MemberInfo{l(9, "")}, twoDown...), 9, false, nil},
		{"unknown", three, 42, true, ErrMemberNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := removalCheck(c.members, c.id, c.force)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("removalCheck = %v, want %v", err, c.want)
			}
			var qe *QuorumError
			if errors.As(err, &qe) && (qe.Needed == 0 || qe.Healthy >= qe.Needed) {
				t.Fatalf("quorum error %+v", qe)
			}
		})
	}
}
