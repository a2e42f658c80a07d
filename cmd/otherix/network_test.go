package main

import (
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

func TestNetworkRows(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nets := []*messages.Network{
		{ID: "01a", Name: "blue", CIDR: "10.0.0.0/24", Type: "overlay", VNI: 4096, MTU: 1390, Gateway: "169.254.1.1", DNS: "169.254.1.1", GatewayMAC: "06:aa:bb:cc:dd:ee", CreatedAt: created},
		{ID: "01b", Name: "lan", CIDR: "192.168.1.0/24", Type: "local", Egress: true, MTU: 1500, CreatedAt: created},
	}
	rows := networkRows(nets, false, created.Add(2*time.Hour))
	if got := strings.Join(rows[1], " "); got != "blue 10.0.0.0/24 overlay 4096 false 1390 "+age(created, created.Add(2*time.Hour)) {
		t.Fatalf("row %q", got)
	}
	if rows[2][3] != none || rows[2][4] != "true" {
		t.Fatalf("local row %v", rows[2])
	}
	wide := networkRows(nets, true, created)
	if len(wide[0]) != 11 || wide[1][9] != "06:aa:bb:cc:dd:ee" || wide[1][10] != "01a" {
		t.Fatalf("wide %v", wide)
	}
}

func TestNetworkDiff(t *testing.T) {
	have := &messages.Network{CIDR: "10.0.0.0/24", Type: "overlay", MTU: 1390}
	if d := networkDiff(messages.CreateNetworkRequest{CIDR: "10.0.0.0/24"}, have); len(d) != 0 {
		t.Fatalf("same: %v", d)
	}
	// Egress changes in place: it is no difference that refuses an apply.
	if d := networkDiff(messages.CreateNetworkRequest{CIDR: "10.0.0.0/24", Egress: true}, have); len(d) != 0 {
		t.Fatalf("egress only: %v", d)
	}
	d := networkDiff(messages.CreateNetworkRequest{CIDR: "10.0.1.0/24", Type: "local", Egress: true, MTU: 1300}, have)
	if len(d) != 3 || strings.Contains(strings.Join(d, " "), "egress") {
		t.Fatalf("diff: %v", d)
	}
}
