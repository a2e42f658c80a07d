package placement_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/otherix/otherix/actors/placement"
	"github.com/otherix/otherix/messages"
)

func node(name, arch string, cpus int, mem int64, mod ...func(*messages.Node)) *messages.Node {
	n := &messages.Node{ID: "id-" + name, Name: name, Phase: messages.NodeReady, Arch: arch, Endpoint: "https://" + name + ":7444",
		Status: messages.NodeStatus{Capacity: &messages.NodeCapacity{CPUs: cpus, MemoryMiB: mem}}}
	for _, m := range mod {
		m(n)
	}
	return n
}

func vm(id string, cpus, mem int, arch, placedOn, specNode string) *messages.VM {
	return &messages.VM{ID: id, Name: id, Spec: messages.VMSpec{CPUs: cpus, MemoryMiB: mem, Arch: arch, Node: specNode},
		Status: messages.VMStatus{Node: placedOn}}
}

func TestChoose(t *testing.T) {
	cordoned := func(n *messages.Node) { n.Cordoned = true }
	unreachable := func(n *messages.Node) { n.Phase = messages.NodeUnreachable }
	noEndpoint := func(n *messages.Node) { n.Endpoint = "" }
	cfg := placement.DefaultConfig()
	for _, tc := range []struct {
		name     string
		cfg      placement.Config
		vm       *messages.VM
		nodes    []*messages.Node
		vms      []*messages.VM
		want     string
		wantCode string
		wantMsg  string
	}{
		{name: "no nodes", vm: vm("v", 1, 512, "amd64", "", ""), wantCode: "no_schedulable_node", wantMsg: "no node is ready"},
		{name: "only unusable nodes", vm: vm("v", 1, 512, "amd64", "", ""),
			nodes:    []*messages.Node{node("a", "amd64", 4, 4096, cordoned), node("b", "amd64", 4, 4096, unreachable), node("c", "amd64", 4, 4096, noEndpoint)},
			wantCode: "no_schedulable_node", wantMsg: "no node is ready"},
		{name: "arch", vm: vm("v", 1, 512, "arm64", "", ""), nodes: []*messages.Node{node("a", "amd64", 4, 4096)},
			wantCode: "no_schedulable_node", wantMsg: "architecture arm64"},
		{name: "arch match", vm: vm("v", 1, 512, "arm64", "", ""), nodes: []*messages.Node{node("a", "amd64", 64, 65536), node("b", "arm64", 1, 1024)},
			want: "b"},
		{name: "cpu overcommit fits", vm: vm("v", 4, 512, "amd64", "", ""), nodes: []*messages.Node{node("a", "amd64", 2, 4096)},
			vms: []*messages.VM{vm("o", 4, 512, "amd64", "a", "")}, want: "a"},
		{name: "cpu overcommit full", vm: vm("v", 5, 512, "amd64", "", ""), nodes: []*messages.Node{node("a", "amd64", 2, 4096)},
			vms: []*messages.VM{vm("o", 4, 512, "amd64", "a", "")}, wantCode: "no_schedulable_node", wantMsg: "5 CPUs and 512 MiB free"},
		{name: "memory not overcommitted", vm: vm("v", 1, 1024, "amd64", "", ""), nodes: []*messages.Node{node("a", "amd64", 8, 2048)},
			vms: []*messages.VM{vm("o", 1, 1536, "amd64", "a", "")}, wantCode: "no_schedulable_node"},
		{name: "memory overcommit ratio", cfg: placement.Config{CPUOvercommit: 4, MemoryOvercommit: 1.5},
			vm: vm("v", 1, 1024, "amd64", "", ""), nodes: []*messages.Node{node("a", "amd64", 8, 2048)},
			vms: []*messages.VM{vm("o", 1, 1536, "amd64", "a", "")}, want: "a"},
		{name: "unplaced and own vm not counted", vm: vm("v", 1, 2048, "amd64", "a", ""), nodes: []*messages.Node{node("a", "amd64", 1, 2048)},
			vms: []*messages.VM{vm("v", 1, 2048, "amd64", "a", ""), vm("p", 1, 2048, "amd64", "", "")}, want: "a"},
		{name: "most free memory fraction", vm: vm("v", 1, 512, "amd64", "", ""),
			nodes: []*messages.Node{node("a", "amd64", 8, 8192), node("b", "amd64", 8, 2048)},
			vms:   []*messages.VM{vm("o", 1, 6144, "amd64", "a", "")}, want: "b"},
		{name: "tie by name", vm: vm("v", 1, 512, "amd64", "", ""),
			nodes: []*messages.Node{node("c", "amd64", 8, 4096), node("b", "amd64", 8, 4096)}, want: "b"},
		{name: "spec.node honoured", vm: vm("v", 1, 512, "amd64", "", "c"),
			nodes: []*messages.Node{node("b", "amd64", 8, 65536), node("c", "amd64", 8, 4096)}, want: "c"},
		{name: "spec.node cordoned", vm: vm("v", 1, 512, "amd64", "", "c"),
			nodes:    []*messages.Node{node("b", "amd64", 8, 4096), node("c", "amd64", 8, 4096, cordoned)},
			wantCode: "node_not_schedulable", wantMsg: "cordoned"},
		{name: "spec.node not ready", vm: vm("v", 1, 512, "amd64", "", "c"),
			nodes: []*messages.Node{node("c", "amd64", 8, 4096, unreachable)}, wantCode: "node_not_schedulable", wantMsg: "unreachable"},
		{name: "spec.node other arch", vm: vm("v", 1, 512, "arm64", "", "c"),
			nodes: []*messages.Node{node("c", "amd64", 8, 4096)}, wantCode: "node_not_schedulable", wantMsg: "it is amd64"},
		{name: "spec.node full", vm: vm("v", 1, 4096, "amd64", "", "c"),
			nodes: []*messages.Node{node("c", "amd64", 8, 4096)}, vms: []*messages.VM{vm("o", 1, 512, "amd64", "c", "")},
			wantCode: "node_not_schedulable", wantMsg: "3584 MiB free"},
		{name: "spec.node unknown", vm: vm("v", 1, 512, "amd64", "", "zz"),
			nodes: []*messages.Node{node("c", "amd64", 8, 4096)}, wantCode: "node_not_schedulable", wantMsg: "no such node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			if c == (placement.Config{}) {
				c = cfg
			}
			got, err := placement.Choose(c, tc.vm, tc.nodes, tc.vms)
			if tc.wantCode == "" {
				if err != nil || got != tc.want {
					t.Fatalf("got %q %v, want %q", got, err, tc.want)
				}
				return
			}
			var me *messages.Error
			if !errors.As(err, &me) || me.Code != tc.wantCode || !strings.Contains(me.Message, tc.wantMsg) {
				t.Fatalf("got %q %v, want %s containing %q", got, err, tc.wantCode, tc.wantMsg)
			}
		})
	}
}
