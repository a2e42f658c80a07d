package main

import (
	"slices"
	"testing"
)

// TestAcceptReplicas: credentials follow the login's own choice of
// transport: an https login never fails over to plain http, and a
// loopback http login never to a remote host in clear.
func TestAcceptReplicas(t *testing.T) {
	list := []string{"https://a:7080", "http://b:7080", "http://127.0.0.1:7081"}
	for _, c := range []struct {
		server string
		want   []string
	}{
		{"https://a:7080", []string{"https://a:7080"}},
		{"http://127.0.0.1:7080", []string{"http://127.0.0.1:7081"}},
		{"http://c:7080", []string{"http://b:7080", "http://127.0.0.1:7081"}}, // login took --insecure
	} {
		if got := acceptReplicas(c.server, list); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.server, got, c.want)
		}
	}
}
