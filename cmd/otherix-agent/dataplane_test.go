package main

import (
	"log/slog"
	"os"
	"strings"
	"testing"
)

func TestDataPlaneOptions(t *testing.T) {
	base := dataPlaneOptions{mode: "auto", wireguard: "auto", wireguardPort: 51820}
	for _, c := range []struct {
		name    string
		mut     func(*dataPlaneOptions)
		wantErr string
	}{
		{"defaults", func(*dataPlaneOptions) {}, ""},
		{"off", func(o *dataPlaneOptions) { o.mode = "off" }, ""},
		{"on with userspace", func(o *dataPlaneOptions) { o.mode, o.wireguard = "on", "userspace" }, ""},
		{"bad mode", func(o *dataPlaneOptions) { o.mode = "maybe" }, "--data-plane"},
		{"bad wireguard", func(o *dataPlaneOptions) { o.wireguard = "wg-quick" }, "--wireguard"},
		{"bad port", func(o *dataPlaneOptions) { o.wireguardPort = 70000 }, "--wireguard-port"},
		{"bad underlay", func(o *dataPlaneOptions) { o.underlayIP = "fe80::1" }, "--underlay-ip"},
		{"underlay", func(o *dataPlaneOptions) { o.underlayIP = "192.0.2.7" }, ""},
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
	if on, _ := (dataPlaneOptions{mode: "off"}).enabled(); on {
		t.Error("off enabled")
	}
}

func TestServeRefusesBadDataPlaneFlag(t *testing.T) {
	_, err := run("serve", "--state-dir", t.TempDir(), "--data-plane", "sometimes")
	if err == nil || !strings.Contains(err.Error(), "--data-plane must be auto, on or off") {
		t.Fatalf("err = %v", err)
	}
}

// TestOverlayFlagIsADeprecatedAlias: scripts written for the flag's first
// name keep working, and are told the new one.
func TestOverlayFlagIsADeprecatedAlias(t *testing.T) {
	out, err := run("serve", "--state-dir", t.TempDir(), "--overlay", "sometimes")
	if err == nil || !strings.Contains(err.Error(), "--data-plane must be auto, on or off") {
		t.Fatalf("the alias does not set --data-plane: err = %v", err)
	}
	if !strings.Contains(out, "--overlay has been deprecated, use --data-plane") {
		t.Fatalf("no deprecation notice in the output:\n%s", out)
	}
}

// TestControlPlaneEntriesCoverEveryReplica: every replica the agent knows
// at start is kept out of the overlay's routes, each address once.
func TestControlPlaneEntriesCoverEveryReplica(t *testing.T) {
	got := controlPlaneEntries(t.Context(), slog.New(slog.DiscardHandler),
		[]string{"https://10.1.0.1:7443", "https://10.1.0.2:7443", "https://10.1.0.1:8443", "https://[fd00::1]:7443"})
	var prefixes []string
	for _, e := range got {
		prefixes = append(prefixes, e.Prefix.String())
	}
	if strings.Join(prefixes, ",") != "10.1.0.1/32,10.1.0.2/32" {
		t.Fatalf("entries %v", prefixes)
	}
}
