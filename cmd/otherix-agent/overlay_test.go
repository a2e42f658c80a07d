package main

import (
	"os"
	"strings"
	"testing"
)

func TestOverlayOptions(t *testing.T) {
	base := overlayOptions{mode: "auto", wireguard: "auto", wireguardPort: 51820}
	for _, c := range []struct {
		name    string
		mut     func(*overlayOptions)
		wantErr string
	}{
		{"defaults", func(*overlayOptions) {}, ""},
		{"off", func(o *overlayOptions) { o.mode = "off" }, ""},
		{"on with userspace", func(o *overlayOptions) { o.mode, o.wireguard = "on", "userspace" }, ""},
		{"bad mode", func(o *overlayOptions) { o.mode = "maybe" }, "--overlay"},
		{"bad wireguard", func(o *overlayOptions) { o.wireguard = "wg-quick" }, "--wireguard"},
		{"bad port", func(o *overlayOptions) { o.wireguardPort = 70000 }, "--wireguard-port"},
		{"bad underlay", func(o *overlayOptions) { o.underlayIP = "fe80::1" }, "--underlay-ip"},
		{"underlay", func(o *overlayOptions) { o.underlayIP = "192.0.2.7" }, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := base
			c.mut(&o)
			err := o.validate()
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("validate() = %v, want %q", err, c.wantErr)
			}
		})
	}
	on, _ := base.enabled()
	if on != (os.Geteuid() == 0) {
		t.Errorf("auto enabled = %v as uid %d", on, os.Geteuid())
	}
	if on, _ := (overlayOptions{mode: "off"}).enabled(); on {
		t.Error("off enabled")
	}
}

func TestServeRefusesBadOverlayFlags(t *testing.T) {
	_, err := run("serve", "--state-dir", t.TempDir(), "--overlay", "sometimes")
	if err == nil || !strings.Contains(err.Error(), "--overlay must be auto, on or off") {
		t.Fatalf("err = %v", err)
	}
}
