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

func TestReplica(t *testing.T) {
	tests := []struct {
		self, other string
		checked     bool
		refused     bool
	}{
		{"1.4.0", "1.4.0", true, false},
		{"1.4.0", "1.4.9", true, false},
		{"1.5.0", "1.4.2", true, false}, // rolling upgrade: one minor ahead
		{"1.4.2", "1.5.0", true, false}, // and the older one restarting meanwhile
		{"1.6.0", "1.4.2", true, true},  // skipped a minor: the other is two behind
		{"1.4.0", "1.6.0", true, true},  // an old replica rejoining a cluster that moved on
		{"2.0.0", "1.9.0", true, true},
		{"1.9.0", "2.0.0", true, true},
		{"1.5.0-rc.1", "1.4.0", true, false},
		{"1.6.0-rc.1", "1.4.0", true, true},
		{"0.3.0", "0.1.0", true, true},
		{"dev", "1.4.0", false, false},
		{"1.4.0", "dev", false, false},
		{"1.4.0", "", false, false}, // a row written before versions were recorded
		{"1.4.0", "e1080c4", false, false},
	}
	for _, tt := range tests {
		checked, err := Replica(tt.self, "r2", tt.other)
		if checked != tt.checked || (err != nil) != tt.refused {
			t.Errorf("Replica(%q, %q) = %v, %v; want checked %v refused %v", tt.self, tt.other, checked, err, tt.checked, tt.refused)
			continue
		}
		if err != nil {
			var me *messages.Error
			if !errors.As(err, &me) || me.Code != Code || me.Kind != messages.KindConflict ||
				me.Details["replica_version"] != tt.self || me.Details["member_version"] != tt.other || me.Details["member"] != "r2" {
				t.Errorf("Replica(%q, %q) error = %#v", tt.self, tt.other, err)
			}
		}
	}
}

func TestMembers(t *testing.T) {
	// r1 is one minor behind (fine), r3 two behind: the refusal names r3
	// whatever the map's order.
	for range 5 {
		n, err := Members("1.6.0", map[string]string{"r1": "1.5.0", "r3": "1.4.0", "r4": "dev"})
		var me *messages.Error
		if !errors.As(err, &me) || me.Details["member"] != "r3" || n != 1 {
			t.Fatalf("Members = %d, %v; want r3 refused after 1 checked", n, err)
		}
	}
	if n, err := Members("1.5.0", map[string]string{"r1": "1.5.1", "r2": "1.4.0", "r3": ""}); err != nil || n != 2 {
		t.Fatalf("Members = %d, %v; want 2 checked, no refusal", n, err)
	}
}
