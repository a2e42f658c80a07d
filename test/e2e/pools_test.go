//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

// TestPoolsRealisedByAgent: the real agent realises the pools its
// heartbeat answers assign: the seeded default pool at its --pool-dir, a
// new dir pool (directory made 0700, marker written), and it refuses a
// non-empty foreign directory and a btrfs pool on another filesystem,
// each reported per node in GET /v1/pools/{name}. Volumes are placed on
// the reported space. Needs no guest.
func TestPoolsRealisedByAgent(t *testing.T) {
	api := startAPI(t, t.TempDir(), "OTHERIX_HEARTBEAT__INTERVAL=1s")
	token := createJoinToken(t, api.URL, map[string]string{"ttl": "10m"})
	root := t.TempDir()
	state := filepath.Join(root, "state")
	if out, err := bootstrap(t, "--server", api.AgentURL, "--token", token, "--name", "n1", "--state-dir", state); err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, out)
	}
	poolDir := filepath.Join(root, "pool-default")
	agent := startAgent(t, state, "--pool-dir", poolDir)

	fast := filepath.Join(root, "srv", "fast")
	foreign := filepath.Join(root, "srv", "foreign")
	if err := os.MkdirAll(filepath.Join(foreign, "someone-elses"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, spec := range map[string]messages.PoolSpec{
		"fast":    {Driver: "dir", Path: fast, AllNodes: true},
		"foreign": {Driver: "dir", Path: foreign, AllNodes: true},
		"cow":     {Driver: "btrfs", Path: filepath.Join(root, "srv", "cow"), AllNodes: true},
	} {
		var p messages.StoragePool
		if code := call(t, "POST", api.URL+"/v1/pools", messages.CreatePoolRequest{Name: name, Spec: spec}, &p); code != 201 {
			t.Fatalf("create pool %s: %d %+v", name, code, p)
		}
	}
	status := func(name string) messages.PoolNodeStatus {
		var p messages.StoragePool
		if code := call(t, "GET", api.URL+"/v1/pools/"+name, nil, &p); code != 200 {
			t.Fatalf("get pool %s: %d", name, code)
		}
		if len(p.Status.Nodes) != 1 {
			return messages.PoolNodeStatus{}
		}
		return p.Status.Nodes[0]
	}
	want := map[string]string{"default": "ok", "fast": "ok", "foreign": "error", "cow": "error"}
	var got map[string]messages.PoolNodeStatus
	if !testutil.Until(30*time.Second, 200*time.Millisecond, func() bool {
		got = map[string]messages.PoolNodeStatus{}
		for name, health := range want {
			got[name] = status(name)
			if got[name].Health != health {
				return false
			}
		}
		return true
	}) {
		b, _ := json.MarshalIndent(got, "", "  ")
		t.Fatalf("pool status per node:\n%s\nagent:\n%s", b, agent.out.String())
	}
	if s := got["default"]; s.Path != poolDir || s.TotalBytes <= 0 || s.FreeBytes <= 0 {
		t.Fatalf("default pool on n1: %+v", s)
	}
	if s := got["fast"]; s.Path != fast || s.TotalBytes <= 0 {
		t.Fatalf("fast on n1: %+v", s)
	}
	if !strings.Contains(got["foreign"].Message, "holds files") || !strings.Contains(got["cow"].Message, "btrfs") {
		t.Fatalf("refusals: foreign %q, cow %q", got["foreign"].Message, got["cow"].Message)
	}
	if fi, err := os.Stat(fast); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("fast's directory: %v %v", fi, err)
	}
	for _, dir := range []string{fast, poolDir} {
		b, err := os.ReadFile(filepath.Join(dir, ".otherix-pool.json"))
		if err != nil || !strings.Contains(string(b), `"pool_id"`) {
			t.Fatalf("marker in %s: %s %v", dir, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(foreign, ".otherix-pool.json")); !os.IsNotExist(err) {
		t.Fatalf("a foreign directory was marked: %v", err)
	}

	var v messages.Volume
	if code := call(t, "POST", api.URL+"/v1/volumes", messages.CreateVolumeRequest{Name: "data",
		Spec: messages.VolumeSpec{Pool: "fast", SizeBytes: 1 << 20}}, &v); code != 201 || v.Status.Node != "n1" || v.Status.Phase != "pending" {
		t.Fatalf("volume: %d %+v", code, v)
	}
	var e struct {
		Error struct {
			Code    string         `json:"code"`
			Details map[string]any `json:"details"`
		} `json:"error"`
	}
	if code := call(t, "POST", api.URL+"/v1/volumes", messages.CreateVolumeRequest{Name: "huge",
		Spec: messages.VolumeSpec{Pool: "fast", SizeBytes: 1 << 50}}, &e); code != 409 || e.Error.Code != "insufficient_storage" {
		t.Fatalf("huge volume: %d %+v", code, e)
	}
	if s := status("fast"); s.AllocatedBytes != 1<<20 {
		t.Fatalf("allocated after a volume: %+v", s)
	}
}
