package messages

import "testing"

func TestNodeAllocationAddRemove(t *testing.T) {
	a := &NodeAllocation{Node: "n"}
	big, small := VMSpec{CPUs: 4, MemoryMiB: 4096, DiskGiB: 40}, VMSpec{CPUs: 1, MemoryMiB: 512, DiskGiB: 5}
	if !a.Add("b", big) || !a.Add("a", small) || a.Add("b", big) {
		t.Fatal("add: a new id counts once, a counted one not again")
	}
	if a.CPUs != 5 || a.MemoryMiB != 4608 || a.DiskGiB != 45 || len(a.VMs) != 2 || a.VMs[0] != "a" || !a.Has("b") {
		t.Fatalf("after adds: %+v", a)
	}
	c := a.Clone()
	if !a.Remove("b", big) || a.Remove("b", big) || a.Remove("zz", small) {
		t.Fatal("remove: a counted id goes once, others change nothing")
	}
	if a.CPUs != 1 || a.MemoryMiB != 512 || a.DiskGiB != 5 || a.Has("b") || a.Equal(c) || !c.Has("b") {
		t.Fatalf("after remove: %+v, clone %+v", a, c)
	}
}
