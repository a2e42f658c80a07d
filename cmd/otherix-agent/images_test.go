package main

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/images"
)

func TestServeImageFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--image-allow", "127.0.0.1/8"}, "--image-allow: 127.0.0.1/8 has host bits set"},
		{[]string{"--image-allow", "localhost"}, "--image-allow: \"localhost\" is not a CIDR"},
		{[]string{"--image-max-size", "lots"}, "--image-max-size: \"lots\" is not a size"},
		{[]string{"--image-pull-policy", "sometimes"}, "--image-pull-policy must be if-not-present or always"},
		{[]string{"--image-cache-max", "half"}, "--image-cache-max: \"half\" is not a size"},
		{[]string{"--image-allow", "127.0.0.1/32,::1", "--image-max-size", "8Gi", "--image-pull-policy", "always"}, "not enrolled"},
	} {
		_, err := run(append([]string{"serve", "--state-dir", t.TempDir()}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("serve %v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
	t.Setenv(envImageAllow, "10.0.0.0/33")
	if _, err := run("serve", "--state-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "--image-allow") {
		t.Errorf("bad %s: err = %v", envImageAllow, err)
	}
}

func TestImageOptionsFromEnv(t *testing.T) {
	t.Setenv(envImageAllow, "127.0.0.1/32, 10.9.0.0/16")
	t.Setenv(envImageMaxSize, "2G")
	t.Setenv(envImageCacheMax, "50Gi")
	cmd := newServeCmd()
	if err := cmd.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	var o imageOptions
	o.allow, _ = cmd.Flags().GetString("image-allow")
	o.maxSize, _ = cmd.Flags().GetString("image-max-size")
	o.pullPolicy, _ = cmd.Flags().GetString("image-pull-policy")
	o.cacheMax, _ = cmd.Flags().GetString("image-cache-max")
	opts, err := o.cacheOptions()
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.Allow) != 2 || opts.Allow[1] != netip.MustParsePrefix("10.9.0.0/16") || opts.MaxSize != 2<<30 || opts.PullPolicy != images.PullIfNotPresent ||
		opts.MaxCacheBytes != 50<<30 {
		t.Errorf("options = %+v", opts)
	}
	// No limit unless one is set.
	o.cacheMax = "0"
	if opts, err := o.cacheOptions(); err != nil || opts.MaxCacheBytes != 0 {
		t.Errorf("--image-cache-max 0: %+v, %v", opts, err)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"64Gi": 64 << 30, "64G": 64 << 30, "512MiB": 512 << 20, "1073741824": 1 << 30, "1t": 1 << 40, "10KB": 10 << 10} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1G", "1.5G", "1P", "G", "99999999999T"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}

// TestImageDenyFollowsDesiredState: the cache denies the overlay supernet
// of the settings and the networks of the last overlay, which an answer
// that only names the unchanged revision keeps.
func TestImageDenyFollowsDesiredState(t *testing.T) {
	c, err := images.New("default", filepath.Join(t.TempDir(), "images"), images.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := &imageDeny{cache: c}
	settings := messages.DefaultSettings()
	settings.OverlaySupernet = "100.80.0.0/16"
	d.update(messages.DesiredState{Settings: settings, OverlayRevision: "r1",
		Overlay: &messages.DesiredOverlay{Revision: "r1", Networks: []messages.DesiredNetwork{{CIDR: "192.168.50.0/24"}}}})
	want := "[192.168.50.0/24 100.80.0.0/16]"
	if got := c.DeniedClusterNetworks(); fmtPrefixes(got) != want {
		t.Fatalf("denied = %v, want %s", got, want)
	}
	d.update(messages.DesiredState{Settings: settings, OverlayRevision: "r1"})
	if got := c.DeniedClusterNetworks(); fmtPrefixes(got) != want {
		t.Errorf("after an unchanged revision: denied = %v, want %s", got, want)
	}
	d.update(messages.DesiredState{Settings: settings})
	if got := c.DeniedClusterNetworks(); fmtPrefixes(got) != "[100.80.0.0/16]" {
		t.Errorf("without an overlay: denied = %v", got)
	}
}

func fmtPrefixes(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}
