//go:build etcd

package store_test

import (
	"errors"
	"testing"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// TestUpdateSettingsGuards: a settings change commits only against the
// view it was checked on: not after another change, not after a network
// was created since (it was never checked against the new supernet).
func TestUpdateSettingsGuards(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	if _, err := s.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	v1, err := s.ReadSettingsView(ctx)
	if err != nil || v1.Settings.OverlaySupernet != messages.DefaultOverlaySupernet || v1.Settings.WireGuardPort != 51820 {
		t.Fatalf("view %+v %v", v1, err)
	}
	v2, _ := s.ReadSettingsView(ctx)
	next := v1.Settings
	next.WireGuardPort = 51821
	saved, err := s.UpdateSettings(ctx, v1, next)
	if err != nil || saved.WireGuardPort != 51821 || saved.Revision == v1.Settings.Revision {
		t.Fatalf("update: %+v %v", saved, err)
	}
	next.WireGuardPort = 51822
	if _, err := s.UpdateSettings(ctx, v2, next); !errors.Is(err, store.ErrSettingsRaced) {
		t.Fatalf("update from a stale view: %v", err)
	}
	v3, _ := s.ReadSettingsView(ctx)
	mustNetwork(t, s, "late", "10.60.0.0/24", messages.NetworkOverlay)
	next = v3.Settings
	next.OverlaySupernet = "10.60.0.0/16"
	if _, err := s.UpdateSettings(ctx, v3, next); !errors.Is(err, store.ErrSettingsRaced) {
		t.Fatalf("update after a network was created: %v", err)
	}
	v4, _ := s.ReadSettingsView(ctx)
	if len(v4.Networks) != 1 || v4.Settings.WireGuardPort != 51821 {
		t.Fatalf("view %+v", v4)
	}
}

// TestTunnelIPReaddressed: a node whose tunnel address is outside the
// supernet it is updated with gets a new one, and its old guard goes in the
// same transaction; one inside keeps its address.
func TestTunnelIPReaddressed(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	nd := newNode("n1")
	if err := s.Commit(ctx, store.CreateNode(store.NewTxn(), nd)); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateNodeWithTunnelIP(ctx, nd, "10.240.0.0/12"); err != nil || nd.TunnelIP != "10.240.0.1" {
		t.Fatalf("first: %q %v", nd.TunnelIP, err)
	}
	if err := s.UpdateNodeWithTunnelIP(ctx, nd, "10.240.0.0/16"); err != nil || nd.TunnelIP != "10.240.0.1" {
		t.Fatalf("inside a narrower supernet: %q %v", nd.TunnelIP, err)
	}
	if err := s.UpdateNodeWithTunnelIP(ctx, nd, "100.87.0.0/16"); err != nil || nd.TunnelIP != "100.87.0.1" {
		t.Fatalf("moved: %q %v", nd.TunnelIP, err)
	}
	if _, err := s.TunnelIPOwner(ctx, "10.240.0.1"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("old guard: %v", err)
	}
	if owner, err := s.TunnelIPOwner(ctx, "100.87.0.1"); err != nil || owner != nd.ID {
		t.Fatalf("new guard: %q %v", owner, err)
	}
	// The freed address is taken again first.
	other := newNode("n2")
	if err := s.Commit(ctx, store.CreateNode(store.NewTxn(), other)); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateNodeWithTunnelIP(ctx, other, "10.240.0.0/12"); err != nil || other.TunnelIP != "10.240.0.1" {
		t.Fatalf("freed address: %q %v", other.TunnelIP, err)
	}
}
