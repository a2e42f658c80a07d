package main

import (
	"bytes"
	"os"
	"os/exec"
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

// TestArchitectureMapCurrent: the package map in docs/architecture.md is
// what the code imports today, so a moved or added package cannot leave
// the newcomer's map behind.
func TestArchitectureMapCurrent(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH to list the packages")
	}
	want, err := packageMap("../..", false, false)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	const open = "```mermaid\n"
	i := bytes.Index(doc, []byte(open))
	if i < 0 {
		t.Fatal("docs/architecture.md has no mermaid block")
	}
	got, _, ok := bytes.Cut(doc[i+len(open):], []byte("```"))
	if !ok || string(got) != want {
		t.Fatalf("docs/architecture.md's package map is not the code's: run `go run ./internal/pkgmap` and paste its output into the first mermaid block")
	}
}
