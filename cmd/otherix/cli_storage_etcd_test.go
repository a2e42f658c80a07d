//go:build etcd

package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/storetest"
	"github.com/otherix/otherix/security"
)

// TestCLIPoolsAndVolumes: pool create/list/get/describe/update/delete and
// volume create/list/get/resize/delete over the real API and store, a
// node's heartbeat standing in for its agent; and kind StoragePool and
// Volume in create, apply and delete -f.
func TestCLIPoolsAndVolumes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	gw, err := gateway.Start(ctx, storetest.New(t), gateway.Config{
		Nodes: gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute}}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	if _, _, err := gw.BootstrapAdmin(ctx, adminEmail, adminPassword); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(server.New(server.Config{}, gw, log).Handler())
	t.Cleanup(srv.Close)
	c := newCLI(t, srv.URL)

	tok, err := gw.CreateJoinToken(ctx, messages.Principal{UserID: "admin", Role: "admin"}, messages.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, der, err := security.NewNodeKeyAndCSR("hv1")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := gw.Enroll(ctx, messages.EnrollRequest{Token: tok.Token, Name: "hv1",
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}, "192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(resp.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	beat := func(pools ...messages.PoolStatus) *messages.HeartbeatResponse {
		t.Helper()
		hb := messages.Heartbeat{AgentVersion: "0.1.0", Arch: "amd64", Endpoint: "https://192.0.2.7:7444",
			Capacity: messages.NodeCapacity{CPUs: 4, MemoryMiB: 8192, Accelerator: "tcg"}, Pools: pools}
		r, err := gw.Heartbeat(ctx, cert, hb)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	beat()

	// The default pool is there from the start; its path is each node's own.
	if out := c.ok("pool", "list", "-o", "wide"); !strings.Contains(out, "default") || !strings.Contains(out, "(each node's --pool-dir)") {
		t.Fatalf("pool list:\n%s", out)
	}
	if out := c.ok("pool", "create", "fast", "--driver", "dir", "--path", "/srv/otherix/fast", "--nodes", "hv1"); out != "pool/fast created (dir at /srv/otherix/fast on hv1)\n" {
		t.Fatalf("create printed %q", out)
	}
	c.usage("not clean", "pool", "create", "evil", "--driver", "dir", "--path", "/srv/../etc", "--all-nodes")
	c.usage("spec.driver", "pool", "create", "x", "--driver", "zfs", "--path", "/srv/x", "--all-nodes")
	c.usage("give --nodes or --all-nodes, not both", "pool", "create", "x", "--driver", "dir", "--path", "/srv/x", "--all-nodes", "--nodes", "a")
	c.fails("[pool_name_conflict]", "pool", "create", "fast", "--driver", "dir", "--path", "/srv/y", "--all-nodes")

	r := beat()
	if len(r.Desired.Pools) != 2 || r.Desired.Pools[1].Name != "fast" || r.Desired.Pools[1].Path != "/srv/otherix/fast" {
		t.Fatalf("desired pools %+v", r.Desired.Pools)
	}
	c.fails("[pool_not_ready]", "volume", "create", "data", "--size", "1Gi", "--pool", "fast")
	beat(messages.PoolStatus{Name: "default", ID: r.Desired.Pools[0].ID, Driver: "dir", Path: "/var/lib/otherix/pools/default",
		TotalBytes: 100 << 30, UsedBytes: 40 << 30, FreeBytes: 60 << 30, Health: "ok"},
		messages.PoolStatus{Name: "fast", ID: r.Desired.Pools[1].ID, Driver: "dir", Path: "/srv/otherix/fast",
			TotalBytes: 20 << 30, UsedBytes: 10 << 30, FreeBytes: 10 << 30, Health: "ok"})

	if out := c.ok("volume", "create", "data", "--size", "1Gi", "--pool", "fast"); !strings.Contains(out, "volume/data created (1Gi in pool fast on hv1, pending: not realised on disk yet)") {
		t.Fatalf("volume create printed %q", out)
	}
	c.usage("not a multiple of 512", "volume", "create", "odd", "--size", "1000B")
	c.usage("--size is required", "volume", "create", "nosize")
	stderr := c.fails("[insufficient_storage]", "volume", "create", "huge", "--size", "11Gi", "--pool", "fast")
	if !strings.Contains(stderr, "pool fast on node hv1 has 10737418240 bytes free; 11811160064 bytes were asked for") {
		t.Fatalf("insufficient_storage: %s", stderr)
	}
	c.ok("volume", "create", "scratch", "--size", "512Mi")
	if out := c.ok("volume", "list"); !strings.Contains(out, "data") || !strings.Contains(out, "scratch") || !strings.Contains(out, "pending") {
		t.Fatalf("volume list:\n%s", out)
	}
	var v messages.Volume
	if err := json.Unmarshal([]byte(c.ok("volume", "get", "data", "-o", "json")), &v); err != nil ||
		v.Spec.SizeBytes != 1<<30 || v.Status.Phase != "pending" || v.Status.Conditions[0].Reason != "NotImplemented" {
		t.Fatalf("volume get -o json: %+v %v", v, err)
	}
	c.fails("[volume_shrink_unsupported]", "volume", "resize", "data", "--size", "512Mi")
	if out := c.ok("volume", "resize", "data", "--size", "2Gi"); out != "volume/data resized to 2Gi\n" {
		t.Fatalf("resize printed %q", out)
	}
	out := c.ok("pool", "describe", "fast")
	for _, want := range []string{"Driver:", "/srv/otherix/fast", "NODE", "hv1", "ok", "20.0GiB", "10.0GiB", "2.0GiB"} {
		if !strings.Contains(out, want) {
			t.Fatalf("describe lacks %q:\n%s", want, out)
		}
	}
	if out := c.ok("pool", "get", "fast", "-o", "yaml"); !strings.Contains(out, "allocated_bytes: 2147483648") {
		t.Fatalf("get -o yaml:\n%s", out)
	}
	c.fails("[pool_in_use]", "pool", "delete", "fast")
	c.fails("[pool_node_in_use]", "pool", "update", "fast", "--nodes", "hv2")
	c.ok("volume", "delete", "data")
	c.ok("volume", "delete", "scratch")
	if out := c.ok("pool", "update", "fast", "--all-nodes"); out != "pool/fast configured (nodes *)\n" {
		t.Fatalf("update printed %q", out)
	}
	if out := c.ok("pool", "delete", "fast"); out != "pool/fast deleted\n" {
		t.Fatalf("delete printed %q", out)
	}

	// Manifests.
	dir := t.TempDir()
	file := filepath.Join(dir, "storage.yaml")
	write := func(body string) {
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("kind: StoragePool\nmetadata: {name: cold}\nspec: {driver: dir, path: /srv/cold, nodes: [hv1]}\n" +
		"---\nkind: Volume\nmetadata: {name: logs}\nspec: {size: 1Gi}\n")
	if out := c.ok("create", "-f", file); !strings.Contains(out, "storagepool/cold created") || !strings.Contains(out, "volume/logs created") {
		t.Fatalf("create -f:\n%s", out)
	}
	write("kind: StoragePool\nmetadata: {name: cold}\nspec: {driver: dir, path: /srv/cold, all_nodes: true}\n" +
		"---\nkind: Volume\nmetadata: {name: logs}\nspec: {size: 3Gi}\n")
	out = c.ok("apply", "-f", file)
	if !strings.Contains(out, "storagepool/cold configured (nodes hv1→*)") || !strings.Contains(out, "volume/logs configured (size 1Gi→3Gi)") {
		t.Fatalf("apply -f:\n%s", out)
	}
	if out := c.ok("apply", "-f", file); !strings.Contains(out, "storagepool/cold unchanged") || !strings.Contains(out, "volume/logs unchanged") {
		t.Fatalf("apply -f again:\n%s", out)
	}
	write("kind: StoragePool\nmetadata: {name: cold}\nspec: {driver: btrfs, path: /srv/cold, all_nodes: true}\n")
	if stderr := c.fails("1 of 1 resources failed", "apply", "-f", file); !strings.Contains(stderr, "spec.driver (dir→btrfs) cannot change") {
		t.Fatalf("apply a new driver: %s", stderr)
	}
	write("kind: Volume\nmetadata: {name: logs}\nspec: {size: 1Gi}\n---\nkind: StoragePool\nmetadata: {name: cold}\n")
	if out := c.ok("delete", "-f", file); !strings.Contains(out, "volume/logs deleted") || !strings.Contains(out, "storagepool/cold deleted") {
		t.Fatalf("delete -f:\n%s", out)
	}
	c.fails("[not_found]", "pool", "get", "cold")
}
