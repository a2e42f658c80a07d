package versionskew

import (
	"errors"
	"testing"

	"github.com/otherix/otherix/messages"
)

func TestAgent(t *testing.T) {
	tests := []struct {
		cp, agent string
		checked   bool
		refused   bool
	}{
		{"1.4.0", "1.4.0", true, false},
		{"1.4.0", "1.4.7", true, false}, // patch releases of one minor interoperate
		{"1.4.3", "1.3.9", true, false}, // one minor behind
		{"1.4.0", "1.2.9", true, true},  // two behind
		{"1.4.0", "1.5.0", true, true},  // newer agent
		{"1.4.0", "1.5.0-rc.1", true, true},
		{"2.0.0", "1.9.0", true, true}, // across a major
		{"1.9.0", "2.0.0", true, true},
		{"0.4.0", "0.3.0", true, false},
		{"0.4.0", "0.5.0", true, true},
		{"v1.4.0", "1.4.1", true, false},
		{"dev", "1.4.0", false, false},
		{"1.4.0", "dev", false, false},
		{"1.4.0", "2e301b4", false, false},
		{"1.4.0", "", false, false},
		{"1.4", "1.4.0", false, false}, // not a release version
	}
	for _, tt := range tests {
		checked, err := Agent(tt.cp, tt.agent)
		if checked != tt.checked || (err != nil) != tt.refused {
			t.Errorf("Agent(%q, %q) = %v, %v; want checked %v refused %v", tt.cp, tt.agent, checked, err, tt.checked, tt.refused)
			continue
		}
		if err != nil {
			var me *messages.Error
			if !errors.As(err, &me) || me.Code != Code || me.Kind != messages.KindConflict ||
				me.Details["agent_version"] != tt.agent || me.Details["control_plane_version"] != tt.cp {
				t.Errorf("Agent(%q, %q) error = %#v", tt.cp, tt.agent, err)
			}
		}
	}
}
