package messages

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestValidateNodeOverlay(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		name  string
		o     *NodeOverlay
		field string // "" when valid
	}{
		{"none", nil, ""},
		{"no key yet", &NodeOverlay{WireGuard: "kernel"}, ""},
		{"full", &NodeOverlay{PublicKey: key, Endpoint: "192.0.2.1:51820", WireGuard: "userspace"}, ""},
		{"ipv6 underlay", &NodeOverlay{PublicKey: key, Endpoint: "[2001:db8::1]:51820"}, ""},
		{"no endpoint", &NodeOverlay{PublicKey: key}, ""},
		{"short key", &NodeOverlay{PublicKey: base64.StdEncoding.EncodeToString(make([]byte, 31))}, "overlay.public_key"},
		{"not base64", &NodeOverlay{PublicKey: strings.Repeat("!", 44)}, "overlay.public_key"},
		{"host name", &NodeOverlay{PublicKey: key, Endpoint: "node-a:51820"}, "overlay.endpoint"},
		{"port zero", &NodeOverlay{PublicKey: key, Endpoint: "192.0.2.1:0"}, "overlay.endpoint"},
		{"unspecified", &NodeOverlay{PublicKey: key, Endpoint: "0.0.0.0:51820"}, "overlay.endpoint"},
		{"implementation", &NodeOverlay{WireGuard: "ebpf"}, "overlay.wireguard"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateNodeOverlay(tc.o)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			e, ok := err.(*Error)
			if !ok || e.Details["field"] != tc.field {
				t.Fatalf("got %v, want invalid %s", err, tc.field)
			}
		})
	}
}
