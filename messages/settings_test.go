package messages

import (
	"strings"
	"testing"
	"time"
)

func TestSettingsValidate(t *testing.T) {
	def := DefaultSettings()
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		name  string
		patch SettingsPatch
		field string // "" for valid
	}{
		{"cgnat /16", SettingsPatch{OverlaySupernet: ptr("100.64.0.0/16")}, ""},
		{"host bits", SettingsPatch{OverlaySupernet: ptr("100.87.0.1/16")}, "overlay_supernet"},
		{"too wide", SettingsPatch{OverlaySupernet: ptr("96.0.0.0/4")}, "overlay_supernet"},
		{"too narrow", SettingsPatch{OverlaySupernet: ptr("100.87.0.0/29")}, "overlay_supernet"},
		{"link-local", SettingsPatch{OverlaySupernet: ptr("169.254.0.0/16")}, "overlay_supernet"},
		{"ipv6", SettingsPatch{OverlaySupernet: ptr("fd00::/64")}, "overlay_supernet"},
		{"port 0", SettingsPatch{WireGuardPort: ptr(0)}, "wireguard_port"},
		{"port", SettingsPatch{WireGuardPort: ptr(51821)}, ""},
		{"vni reversed", SettingsPatch{VNIRange: &VNIRange{Min: 10, Max: 5}}, "vni_range"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := c.patch.Apply(def)
			err := s.Validate()
			if c.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if KindOf(err) != KindInvalid || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("got %v, want an invalid %s", err, c.field)
			}
		})
	}
	// A document written before wireguard_port existed reads as the default.
	old := Settings{}
	old.Defaults()
	if old.WireGuardPort != WireGuardListenPort {
		t.Fatalf("defaults: %+v", old)
	}
	if !(SettingsPatch{}).Empty() || (SettingsPatch{UnderlayMTU: ptr(1500)}).Empty() {
		t.Fatal("Empty")
	}
}

func TestHostNetworkCondition(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cs := []HostConflict{{Prefix: "10.240.0.0/12", Use: "overlay supernet on oxwg0", Taken: "10.255.255.53/32", Source: "resolver /etc/resolv.conf"}}
	c := HostNetworkCondition(cs, nil, t0)
	if c.Type != "HostNetworkConflict" || c.Status != "True" || c.Reason != "PrefixOverlapsHost" ||
		!strings.Contains(c.Message, "overlay supernet on oxwg0 10.240.0.0/12 overlaps 10.255.255.53/32 (resolver /etc/resolv.conf)") {
		t.Fatalf("%+v", c)
	}
	if again := HostNetworkCondition(cs, &c, t0.Add(time.Minute)); !again.LastTransitionTime.Equal(t0) {
		t.Fatalf("same status moved the transition time: %+v", again)
	}
	clear := HostNetworkCondition(nil, &c, t0.Add(time.Minute))
	if clear.Status != "False" || clear.Reason != "NoConflict" || clear.Message != "" || !clear.LastTransitionTime.Equal(t0.Add(time.Minute)) {
		t.Fatalf("%+v", clear)
	}
}

func ptr[T any](v T) *T { return &v }
