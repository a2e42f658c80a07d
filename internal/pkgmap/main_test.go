package main

import (
	"reflect"
	"sort"
	"strings"
	"testing"
)

// TestReduce: an import implied by a longer path is dropped, the others stay.
func TestReduce(t *testing.T) {
	g := map[string][]string{
		"cmd/api":     {"http/server", "actors/vm", "messages"},
		"http/server": {"actors/vm", "messages"},
		"actors/vm":   {"messages"},
		"messages":    nil,
		"cmd/agent":   {"config"},
		"config":      nil,
	}
	got := reduce(g)
	for _, deps := range got {
		sort.Strings(deps)
	}
	want := map[string][]string{
		"cmd/api":     {"http/server"},
		"http/server": {"actors/vm"},
		"actors/vm":   {"messages"},
		"cmd/agent":   {"config"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reduce = %v, want %v", got, want)
	}
	out := render(g, got, "example.org/m")
	for _, line := range []string{"flowchart LR", `subgraph g_http ["http/"]`, "cmd_api --> http_server", "actors_vm --> messages"} {
		if !strings.Contains(out, line) {
			t.Errorf("render lacks %q:\n%s", line, out)
		}
	}
	if strings.Contains(out, "cmd_api --> messages") {
		t.Errorf("render draws an implied arrow:\n%s", out)
	}
}

func TestHarness(t *testing.T) {
	for p, want := range map[string]bool{"test/sim": true, "internal/testutil": true, "persistence/storetest": true,
		"persistence/store": false, "http/server": false, "internal/pkgmap": true} {
		if harness(p) != want {
			t.Errorf("harness(%q) = %v", p, !want)
		}
	}
}
