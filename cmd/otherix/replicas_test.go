package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// TestClusterMembersCommands: the wide member table shows the lag and the
// versions ("-" for a lag the server could not tell), remove sends the
// reference and --force as the API takes them, and cluster info lists
// the replicas.
func TestClusterMembersCommands(t *testing.T) {
	ca, err := security.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lag := uint64(7)
	members := []messages.ClusterMember{
		{Name: "otherix", ID: "a1", Role: "voter", IsLeader: true, Healthy: true, APIURL: "https://10.0.0.1:7080",
			PeerURL: "https://10.0.0.1:2380", RaftIndexLag: new(uint64), Version: "v1.2.3", EtcdVersion: "3.7.3"},
		{Name: "r2", ID: "b2", Role: "learner", Healthy: true, PeerURL: "https://10.0.0.2:2380", RaftIndexLag: &lag},
		{ID: "c3", Role: "learner", PeerURL: "https://10.0.0.3:2380"},
	}
	var removes []string
	mux := http.NewServeMux()
	js := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(ca.CertPEM()) })
	mux.HandleFunc("GET /v1/cluster/members", func(w http.ResponseWriter, _ *http.Request) {
		js(w, 200, map[string]any{"items": members})
	})
	mux.HandleFunc("DELETE /v1/cluster/members/{ref}", func(w http.ResponseWriter, r *http.Request) {
		ref, force := r.PathValue("ref"), r.URL.Query().Get("force") == "true"
		removes = append(removes, ref)
		switch {
		case ref == "otherix" && !force:
			js(w, 409, map[string]any{"error": map[string]any{"code": "quorum_at_risk", "message": "removing otherix would leave 1 voters", "details": map[string]any{}}})
		case ref == "10.0.0.3:2380":
			js(w, 200, messages.RemovedClusterMember{Member: members[2]})
		default:
			js(w, 200, messages.RemovedClusterMember{Member: members[0]})
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	out, errs, code := runNodeCLI(t, srv, "cluster", "members", "-o", "wide")
	if code != 0 {
		t.Fatalf("members wide (%d): %s", code, errs)
	}
	for _, want := range []string{"LAG", "VERSION", "ETCD", "v1.2.3", "3.7.3", "(not started)"} {
		if !strings.Contains(out, want) {
			t.Errorf("members -o wide lacks %q:\n%s", want, out)
		}
	}
	lines := strings.Split(out, "\n")
	if f := strings.Fields(lines[2]); len(f) < 10 || f[0] != "r2" || f[9] != "7" {
		t.Errorf("r2's row %q: want lag 7 in the LAG column", lines[2])
	}
	if f := strings.Fields(lines[3]); len(f) < 11 || f[10] != "-" {
		t.Errorf("never-started row %q: want an unknown lag as -", lines[3])
	}
	if _, errs, code = runNodeCLI(t, srv, "cluster", "members", "remove", "otherix"); code == 0 || !strings.Contains(errs, "quorum_at_risk") {
		t.Fatalf("remove without force (%d): %s", code, errs)
	}
	if out, errs, code = runNodeCLI(t, srv, "cluster", "members", "remove", "otherix", "--force"); code != 0 || out != "member/otherix removed\n" {
		t.Fatalf("remove --force (%d): %q %s", code, out, errs)
	}
	if out, errs, code = runNodeCLI(t, srv, "cluster", "members", "rm", "https://10.0.0.3:2380"); code != 0 || out != "member/c3 removed\n" {
		t.Fatalf("remove by peer URL (%d): %q %s", code, out, errs)
	}
	if want := []string{"otherix", "otherix", "10.0.0.3:2380"}; strings.Join(removes, ",") != strings.Join(want, ",") {
		t.Fatalf("remove requests %v, want %v", removes, want)
	}
	if _, _, code = runNodeCLI(t, srv, "cluster", "members", "remove"); code == 0 {
		t.Fatal("remove without a name accepted")
	}

	out, errs, code = runNodeCLI(t, srv, "cluster", "info")
	if code != 0 || !strings.Contains(out, "Replicas:") || !strings.Contains(out, "otherix (voter, leader) https://10.0.0.1:7080") ||
		!strings.Contains(out, "r2 (learner)") || !strings.Contains(out, "(not started) c3 (learner, unhealthy)") {
		t.Fatalf("cluster info (%d): %s %s", code, out, errs)
	}
}

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
	wide := memberRows([]messages.ClusterMember{{Name: "a", LoopOwner: true}}, true)
	for _, r := range wide[1:] {
		if len(r) != len(wide[0]) {
			t.Fatalf("wide row %v does not line up with its header %v", r, wide[0])
		}
	}
}
