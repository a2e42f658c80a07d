package main

import (
	"testing"

	"github.com/otherix/otherix/messages"
)

// TestMemberRowsMarkLoopOwner: the members table says which replica runs
// the periodic loops, in its LOOPS column.
func TestMemberRowsMarkLoopOwner(t *testing.T) {
	rows := memberRows([]messages.ClusterMember{{Name: "a", Role: "voter"}, {Name: "b", Role: "voter", LoopOwner: true}}, false)
	col := -1
	for i, h := range rows[0] {
		if h == "LOOPS" {
			col = i
		}
	}
	if col < 0 {
		t.Fatalf("no LOOPS column: %v", rows[0])
	}
	if rows[1][col] != "-" || rows[2][col] != "owner" {
		t.Fatalf("LOOPS column: %q, %q", rows[1][col], rows[2][col])
	}
	for _, r := range memberRows([]messages.ClusterMember{{Name: "a", LoopOwner: true}}, true) {
		if len(r) != len(rows[0])+3 {
			t.Fatalf("wide row %v does not line up with its header", r)
		}
	}
}
