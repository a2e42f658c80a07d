//go:build etcd

package gateway_test

import (
	"testing"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

func TestOwnerScoping(t *testing.T) {
	g, _ := startGateway(t, slowJobs())
	ctx := t.Context()
	vm, task := createVM(t, g, "web") // owned by alice
	if _, err := g.GetVM(ctx, "bob", vm.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bob gets alice's vm by id: %v", err)
	}
	if _, err := g.GetVM(ctx, "bob", "web"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bob gets alice's vm by name: %v", err)
	}
	for _, ref := range []string{vm.ID, "web"} {
		if got, err := g.GetVM(ctx, "", ref); err != nil || got.ID != vm.ID {
			t.Fatalf("any-owner get %s = %v %v", ref, got, err)
		}
	}
	if _, err := g.GetTask(ctx, "bob", task.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bob gets alice's task: %v", err)
	}
	if _, err := g.GetTask(ctx, "", task.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.VMTask(ctx, "bob", vm.ID, messages.TaskVMDelete, false); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("bob deletes alice's vm: %v", err)
	}
	bobs, _, err := g.ListVMs(ctx, "bob", store.Page{})
	if err != nil || len(bobs) != 0 {
		t.Fatalf("bob's list = %v %v", bobs, err)
	}
	all, _, err := g.ListVMs(ctx, "", store.Page{})
	if err != nil || len(all) != 1 {
		t.Fatalf("all = %v %v", all, err)
	}
	tasks, _, err := g.ListTasks(ctx, "", store.Page{})
	if err != nil || len(tasks) != 1 {
		t.Fatalf("all tasks = %v %v", tasks, err)
	}
	// Two owners with the same name: ambiguous for the any-owner scope.
	if _, _, err := g.CreateVM(ctx, "bob", messages.CreateVMRequest{Name: "web",
		Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example.com/debian-12.qcow2"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = g.GetVM(ctx, "", "web")
	wantCode(t, err, "ambiguous_vm_name")
	if _, _, err := g.CreateVM(ctx, "", messages.CreateVMRequest{Name: "x"}); messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("create without owner = %v", err)
	}
}
