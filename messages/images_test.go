package messages

import (
	"strings"
	"testing"
)

func TestPullPolicyValidation(t *testing.T) {
	for _, tc := range []struct {
		policy string
		ok     bool
	}{{"", true}, {PullIfNotPresent, true}, {PullAlways, true}, {PullNever, true},
		{"always", false}, {"IfNotPresent ", false}, {"Sometimes", false}} {
		s := VMSpec{Image: ImageSource{URL: "https://img.example/d.qcow2", PullPolicy: tc.policy}}
		s.Defaults()
		err := s.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("pull_policy %q: %v", tc.policy, err)
		}
		if err != nil && !strings.Contains(err.Error(), "spec.image.pull_policy") {
			t.Errorf("pull_policy %q: error %v does not name the field", tc.policy, err)
		}
	}
}

func TestIsSHA256Hex(t *testing.T) {
	if !IsSHA256Hex(strings.Repeat("0a", 32)) || IsSHA256Hex(strings.Repeat("0A", 32)) ||
		IsSHA256Hex("../"+strings.Repeat("a", 61)) || IsSHA256Hex(strings.Repeat("a", 63)) {
		t.Error("IsSHA256Hex accepts or refuses the wrong strings")
	}
}
