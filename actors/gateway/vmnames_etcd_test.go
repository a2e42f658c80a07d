//go:build etcd

package gateway_test

import (
	"strings"
	"testing"

	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/messages"
)

// TestVMNamesAcrossOwners: a developer naming a VM like the admin's does not
// make the admin's name ambiguous: a name resolves to the caller's own VM
// first; another owner's needs OWNER/NAME (owner's email) or the id, and
// OWNER/NAME never reaches outside the caller's scope.
func TestVMNamesAcrossOwners(t *testing.T) {
	g, st := startIdentity(t, identity.Config{})
	ctx := t.Context()
	admin, err := st.UserByEmail(ctx, adminEmail)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := g.CreateUser(ctx, messages.CreateUserRequest{Email: "dev@example.com", Role: "developer", Password: devPass})
	if err != nil {
		t.Fatal(err)
	}
	spec := messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example.com/debian-12.qcow2"}}
	mine, _, err := g.CreateVM(ctx, admin.ID, messages.CreateVMRequest{Name: "web-1", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	theirs, _, err := g.CreateVM(ctx, dev.ID, messages.CreateVMRequest{Name: "web-1", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	asAdmin := messages.WithCaller(ctx, admin.ID)
	// Any-owner scope ("") with the admin calling: the admin's own web-1.
	if got, err := g.GetVM(asAdmin, "", "web-1"); err != nil || got.ID != mine.ID {
		t.Fatalf("admin's web-1 = %v, %v; want %s", got, err, mine.ID)
	}
	if got, err := g.GetVM(asAdmin, "", "dev@example.com/web-1"); err != nil || got.ID != theirs.ID {
		t.Fatalf("dev@example.com/web-1 = %v, %v; want %s", got, err, theirs.ID)
	}
	if got, err := g.GetVM(asAdmin, "", "DEV@example.com/web-1"); err != nil || got.ID != theirs.ID {
		t.Fatalf("email case: %v, %v", got, err)
	}
	if got, err := g.GetVM(asAdmin, "", theirs.ID); err != nil || got.ID != theirs.ID {
		t.Fatalf("by id = %v, %v", got, err)
	}
	// Changes by name go to the caller's own VM too.
	cpus := 2
	if got, err := g.UpdateVM(asAdmin, "", "web-1", messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &cpus}}); err != nil || got.ID != mine.ID {
		t.Fatalf("admin updates web-1: %v, %v; want %s", got, err, mine.ID)
	}
	// Another caller with the any-owner scope and no web-1 of its own: two
	// owners use the name, which says how to pick one.
	ops := messages.WithCaller(ctx, messages.NewID())
	e := wantCode(t, func() error { _, err := g.GetVM(ops, "", "web-1"); return err }(), "ambiguous_vm_name")
	if !strings.Contains(e.Message, "OWNER_EMAIL/web-1") {
		t.Fatalf("ambiguous message %q does not say how to name one", e.Message)
	}
	// The developer's own scope: OWNER/NAME of another owner is not found,
	// whether that VM exists or not.
	for _, ref := range []string{"admin@example.com/web-1", "nobody@example.com/web-1", "dev@example.com/nope", "/web-1", "dev@example.com/"} {
		if _, err := g.GetVM(messages.WithCaller(ctx, dev.ID), dev.ID, ref); messages.KindOf(err) != messages.KindNotFound {
			t.Fatalf("dev gets %s: %v, want not found", ref, err)
		}
	}
	if got, err := g.GetVM(ctx, dev.ID, "dev@example.com/web-1"); err != nil || got.ID != theirs.ID {
		t.Fatalf("dev's own OWNER/NAME = %v, %v", got, err)
	}
}
