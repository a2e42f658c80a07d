//go:build etcd

package gateway_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/http/agentclient/agenttest"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/server"
	"github.com/otherix/otherix/nodeagent/vmactor"
)

// TestImagesThroughTheRealAgentServer: the control plane's image calls go
// over mTLS to the real agent API (nodeagent/server with its TLS policy),
// its VM manager and a real image cache holding a base a VM disk uses.
func TestImagesThroughTheRealAgentServer(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	body := make([]byte, 1<<20)
	rand.Read(body)
	body[510], body[511] = 0x55, 0xAA
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	t.Cleanup(origin.Close)

	base := t.TempDir()
	diskDir := filepath.Join(base, "pool", "vms")
	cache, err := images.New("default", filepath.Join(base, "pool", "images"), images.Options{
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, DiskDirs: []string{diskDir}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	log := slog.New(slog.DiscardHandler)
	m, err := vmactor.New(vmactor.Config{StateDir: filepath.Join(base, "state"), RunDir: filepath.Join(base, "run"),
		DiskDir: diskDir, Images: cache, Accel: "tcg", MetricsInterval: -1, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Recover(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Close(ctx)
	})
	img, err := cache.Ensure(t.Context(), origin.URL+"/debian-12.img", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	vmID := messages.NewID()
	os.MkdirAll(filepath.Join(base, "state", vmID), 0o700)
	disk := filepath.Join(diskDir, vmID+".qcow2")
	if err := cache.CreateVMDisk(t.Context(), img, disk, 4<<20); err != nil {
		t.Fatal(err)
	}

	pki := agenttest.NewPKI(t)
	nodeCert := pki.NodeCert(t, "hv1")
	srv := httptest.NewUnstartedServer(server.Handler(m, log))
	srv.TLS = server.TLSConfig(func() *tls.Certificate { return &nodeCert }, pki.CA.Pool(), log)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	clientCert := pki.ClientCert(t)
	cfg := fastJobs()
	clock := testutil.NewClock(time.Now())
	cfg.Nodes = gateway.NodesConfig{HeartbeatInterval: time.Minute, GoneAfter: 10 * time.Minute, Now: clock.Now}
	cfg.Calls = agentclient.New(pki.CA.Pool(), func() (*tls.Certificate, error) { return &clientCert, nil })
	g, st := startGateway(t, cfg)
	if _, err := st.SeedSettings(t.Context(), messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	_, cert := enrollNode(t, g, "hv1")
	hb := observed(4)
	hb.Endpoint = srv.URL
	if _, err := g.Heartbeat(t.Context(), cert, hb); err != nil {
		t.Fatal(err)
	}

	got, err := g.ListImages(t.Context(), "hv1")
	if err != nil || len(got) != 1 || got[0].Error != nil || len(got[0].Images) != 1 {
		t.Fatalf("ListImages(hv1) = %+v, %v", got, err)
	}
	if li := got[0].Images[0]; li.SHA256 != img.SHA256 || len(li.VMs) != 1 || li.VMs[0] != vmID || li.Aliases[0] != "debian-12.img" {
		t.Errorf("listed %+v, want %s used by %s", li, img.SHA256, vmID)
	}
	wantCode(t, g.DeleteImage(t.Context(), "hv1", img.SHA256), "image_in_use")
	os.Remove(disk)
	if err := g.DeleteImage(t.Context(), "hv1", img.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img.Path); err == nil {
		t.Error("the base is still on disk")
	}
	wantCode(t, g.DeleteImage(t.Context(), "hv1", img.SHA256), "image_not_found")
}
