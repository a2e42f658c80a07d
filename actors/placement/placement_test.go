package placement_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/otherix/otherix/actors/placement"
	"github.com/otherix/otherix/messages"
)

const gib = 1 << 30

// pool sets the node's default pool to total and free GiB.
func pool(total, free int64) func(*messages.Node) {
	return func(n *messages.Node) {
		n.Status.Pools = []messages.PoolStatus{{Name: "images", TotalBytes: 1 << 50, FreeBytes: 1 << 50},
			{Name: "default", TotalBytes: total * gib, FreeBytes: free * gib}}
	}
}

func node(name, arch string, cpus int, mem int64, mod ...func(*messages.Node)) *messages.Node {
	n := &messages.Node{ID: "id-" + name, Name: name, Phase: messages.NodeReady, Arch: arch, Endpoint: "https://" + name + ":7444",
		Status: messages.NodeStatus{Capacity: &messages.NodeCapacity{CPUs: cpus, MemoryMiB: mem},
			Pools: []messages.PoolStatus{{Name: "default", TotalBytes: 1000 * gib, FreeBytes: 1000 * gib}}}}
	for _, m := range mod {
		m(n)
	}
	return n
}

func vm(id string, cpus, mem int, arch, placedOn, specNode string) *messages.VM {
	return &messages.VM{ID: id, Name: id, Spec: messages.VMSpec{CPUs: cpus, MemoryMiB: mem, DiskGiB: 10, Arch: arch, Node: specNode},
		Status: messages.VMStatus{Node: placedOn}}
}

func withDisk(v *messages.VM, gib int) *messages.VM {
	v.Spec.DiskGiB = gib
	return v
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
		// wantResource is details.resource of an insufficient_capacity.
		wantResource string
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
			vms: []*messages.VM{vm("o", 4, 512, "amd64", "a", "")}, wantCode: "insufficient_capacity", wantMsg: "5 CPUs, 512 MiB and 10 GiB of disk free", wantResource: "cpus"},
		{name: "disk promised", vm: withDisk(vm("v", 1, 512, "amd64", "", ""), 10), nodes: []*messages.Node{node("a", "amd64", 8, 8192, pool(100, 90))},
			vms: []*messages.VM{withDisk(vm("o", 1, 512, "amd64", "a", ""), 95)}, wantCode: "insufficient_capacity", wantMsg: "10 GiB of disk free", wantResource: "disk_gib"},
		{name: "disk promised on spec.node", vm: withDisk(vm("v", 1, 512, "amd64", "", "a"), 10), nodes: []*messages.Node{node("a", "amd64", 8, 8192, pool(100, 90))},
			vms: []*messages.VM{withDisk(vm("o", 1, 512, "amd64", "a", ""), 95)}, wantCode: "insufficient_capacity", wantMsg: "5 GiB of disk left to promise, the vm needs 10", wantResource: "disk_gib"},
		{name: "disk free space", vm: withDisk(vm("v", 1, 512, "amd64", "", "a"), 10), nodes: []*messages.Node{node("a", "amd64", 8, 8192, pool(100, 9))},
			wantCode: "insufficient_capacity", wantMsg: "its pool has 9 GiB free, the vm needs 10", wantResource: "disk_gib"},
		{name: "disk fits exactly", vm: withDisk(vm("v", 1, 512, "amd64", "", ""), 5), nodes: []*messages.Node{node("a", "amd64", 8, 8192, pool(100, 5))},
			vms: []*messages.VM{withDisk(vm("o", 1, 512, "amd64", "a", ""), 95)}, want: "a"},
		{name: "disk overcommit ratio", cfg: placement.Config{DiskOvercommit: 2}, vm: withDisk(vm("v", 1, 512, "amd64", "", ""), 10),
			nodes: []*messages.Node{node("a", "amd64", 8, 8192, pool(100, 9))},
			vms:   []*messages.VM{withDisk(vm("o", 1, 512, "amd64", "a", ""), 180)}, want: "a"},
		{name: "disk overcommit ratio full", cfg: placement.Config{DiskOvercommit: 2}, vm: withDisk(vm("v", 1, 512, "amd64", "", "a"), 11),
			nodes: []*messages.Node{node("a", "amd64", 8, 8192, pool(100, 90))},
			vms:   []*messages.VM{withDisk(vm("o", 1, 512, "amd64", "a", ""), 190)}, wantCode: "insufficient_capacity", wantMsg: "10 GiB of disk left to promise", wantResource: "disk_gib"},
		{name: "disk of the emptier pool", vm: withDisk(vm("v", 1, 512, "amd64", "", ""), 50),
			nodes: []*messages.Node{node("a", "amd64", 8, 8192, pool(100, 40)), node("b", "amd64", 8, 1024, pool(100, 60))}, want: "b"},
		{name: "no pool reported", vm: vm("v", 1, 512, "amd64", "", "a"),
			nodes:    []*messages.Node{node("a", "amd64", 8, 8192, func(n *messages.Node) { n.Status.Pools = nil })},
			wantCode: "node_not_schedulable", wantMsg: "no space for storage pool default"},
		{name: "memory not overcommitted", vm: vm("v", 1, 1024, "amd64", "", ""), nodes: []*messages.Node{node("a", "amd64", 8, 2048)},
			vms: []*messages.VM{vm("o", 1, 1536, "amd64", "a", "")}, wantCode: "insufficient_capacity", wantResource: "memory_mib"},
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
			wantCode: "insufficient_capacity", wantMsg: "3584 MiB free", wantResource: "memory_mib"},
		{name: "spec.node unknown", vm: vm("v", 1, 512, "amd64", "", "zz"),
			nodes: []*messages.Node{node("c", "amd64", 8, 4096)}, wantCode: "node_not_schedulable", wantMsg: "no such node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			if c == (placement.Config{}) {
				c = cfg
			}
			got, err := placement.Choose(c, tc.vm, tc.nodes, tally(tc.vms))
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
			if r := me.Details["resource"]; tc.wantResource != "" && r != tc.wantResource {
				t.Fatalf("details.resource = %v, want %s", r, tc.wantResource)
			}
		})
	}
}

// tally is what the allocation documents say when vms are the VM rows.
func tally(vms []*messages.VM) map[string]*messages.NodeAllocation {
	out := map[string]*messages.NodeAllocation{}
	for _, v := range vms {
		if v.Status.Node == "" {
			continue
		}
		if out[v.Status.Node] == nil {
			out[v.Status.Node] = &messages.NodeAllocation{Node: v.Status.Node}
		}
		out[v.Status.Node].Add(v.ID, v.Spec)
	}
	return out
}

func TestCanEverHost(t *testing.T) {
	gone := func(n *messages.Node) { n.Phase = messages.NodeGone }
	cordoned := func(n *messages.Node) { n.Cordoned = true }
	noCapacity := func(n *messages.Node) { n.Status.Capacity = nil }
	small := []*messages.Node{node("a", "amd64", 2, 4096, pool(100, 10), cordoned), node("b", "amd64", 4, 2048, pool(50, 50))}
	for _, tc := range []struct {
		name         string
		vm           *messages.VM
		nodes        []*messages.Node
		wantResource string // "" admits
		wantMsg      string
	}{
		{name: "no node yet is transient", vm: vm("v", 64, 512, "amd64", "", "")},
		{name: "only nodes without capacity", vm: vm("v", 64, 512, "amd64", "", ""), nodes: []*messages.Node{node("a", "amd64", 2, 4096, noCapacity)}},
		{name: "fits a cordoned node", vm: vm("v", 8, 4096, "amd64", "", ""), nodes: small},
		{name: "full now is not never", vm: withDisk(vm("v", 16, 2048, "amd64", "", ""), 50), nodes: small},
		{name: "cpus", vm: vm("v", 64, 512, "amd64", "", ""), nodes: small, wantResource: "cpus", wantMsg: "asks 64 CPUs, any node of amd64 offers at most 16"},
		{name: "memory", vm: vm("v", 1, 8192, "amd64", "", ""), nodes: small, wantResource: "memory_mib", wantMsg: "at most 4096"},
		{name: "disk", vm: withDisk(vm("v", 1, 512, "amd64", "", ""), 65536), nodes: small, wantResource: "disk_gib", wantMsg: "65536 GiB"},
		{name: "arch", vm: vm("v", 1, 512, "arm64", "", ""), nodes: small, wantResource: "arch", wantMsg: "no node is"},
		{name: "not together", vm: withDisk(vm("v", 12, 4096, "amd64", "", ""), 10), nodes: small, wantResource: "cpus,memory_mib,disk_gib"},
		{name: "gone nodes do not count", vm: vm("v", 64, 512, "amd64", "", ""),
			nodes: []*messages.Node{node("g", "amd64", 64, 65536, gone), node("a", "amd64", 2, 4096)}, wantResource: "cpus"},
		{name: "spec.node's own size", vm: vm("v", 1, 8192, "amd64", "", "b"),
			nodes: []*messages.Node{node("a", "amd64", 2, 65536), node("b", "amd64", 2, 4096)}, wantResource: "memory_mib", wantMsg: "node b"},
		{name: "spec.node arch", vm: vm("v", 1, 512, "arm64", "", "b"), nodes: small, wantResource: "arch", wantMsg: "node b is amd64"},
		{name: "spec.node not enrolled yet", vm: vm("v", 64, 512, "amd64", "", "zz"), nodes: small},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := placement.CanEverHost(placement.DefaultConfig(), tc.vm, tc.nodes)
			if tc.wantResource == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var me *messages.Error
			if !errors.As(err, &me) || me.Code != "unschedulable" || me.Kind != messages.KindUnprocessable ||
				me.Details["resource"] != tc.wantResource || !strings.Contains(me.Message, tc.wantMsg) {
				t.Fatalf("got %v (%+v), want unschedulable %s containing %q", err, me, tc.wantResource, tc.wantMsg)
			}
		})
	}
}

// TestAdmit: a growth of a node's allocation within capacity × overcommit
// passes; past it, insufficient_capacity names the resource that grew past
// it; a resource that does not grow is never refused, even over its limit
// (a node that shrank keeps its VMs' shrinking resizes).
func TestAdmit(t *testing.T) {
	n := node("a", "amd64", 2, 4096, pool(100, 100)) // 8 vCPUs, 4096 MiB, 100 GiB
	p := placement.New(nil, placement.DefaultConfig())
	for _, tc := range []struct {
		name     string
		from, to messages.NodeAllocation
		resource string
	}{
		{name: "fits exactly", from: messages.NodeAllocation{CPUs: 4}, to: messages.NodeAllocation{CPUs: 8, MemoryMiB: 4096, DiskGiB: 100}},
		{name: "cpus", from: messages.NodeAllocation{CPUs: 6}, to: messages.NodeAllocation{CPUs: 9}, resource: "cpus"},
		{name: "memory", to: messages.NodeAllocation{MemoryMiB: 4097}, resource: "memory_mib"},
		{name: "disk", to: messages.NodeAllocation{DiskGiB: 101}, resource: "disk_gib"},
		{name: "over but not growing", from: messages.NodeAllocation{CPUs: 12, MemoryMiB: 100}, to: messages.NodeAllocation{CPUs: 12, MemoryMiB: 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.from.Node, tc.to.Node = "a", "a"
			err := placement.AdmitOn(p, n, &tc.from, &tc.to)
			if tc.resource == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var me *messages.Error
			if !errors.As(err, &me) || me.Code != messages.CodeInsufficientCapacity || me.Kind != messages.KindConflict ||
				me.Details["resource"] != tc.resource || me.Details["node"] != "a" {
				t.Fatalf("got %v (%+v), want insufficient_capacity of %s", err, me, tc.resource)
			}
		})
	}
}
