package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/otherix/otherix/api/openapi"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/images"
	"github.com/otherix/otherix/nodeagent/vmactor"
)

// TestImagesThroughTheRealAgent serves /v1/images from a real VM manager
// over a real image cache, with a VM disk backed by a cached image: the
// list names the VM, the delete is refused while its disk exists and
// succeeds once it is gone. Every answer is checked against agent.yaml.
func TestImagesThroughTheRealAgent(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed")
	}
	body := make([]byte, 1<<20)
	rand.Read(body)
	body[510], body[511] = 0x55, 0xAA // an MBR: a raw disk the cache accepts
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
	m, err := vmactor.New(vmactor.Config{StateDir: filepath.Join(base, "state"), RunDir: filepath.Join(base, "run"),
		DiskDir: diskDir, Images: cache, Accel: "tcg", MetricsInterval: -1, Log: slog.New(slog.DiscardHandler)})
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

	ctx := t.Context()
	img, err := cache.Ensure(ctx, origin.URL+"/images/debian-12.img", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	vmID := messages.NewID()
	os.MkdirAll(filepath.Join(base, "state", vmID), 0o700)
	disk := filepath.Join(diskDir, vmID+".qcow2")
	if err := cache.CreateVMDisk(ctx, img, disk, 4<<20); err != nil {
		t.Fatal(err)
	}

	doc, err := openapi3.NewLoader().LoadFromData(openapi.Agent)
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := newPKI(t)
	srv := httptest.NewUnstartedServer(Handler(m, slog.New(slog.DiscardHandler)))
	srv.TLS = TLSConfig(func() *tls.Certificate { return &p.node }, p.ca.Pool(), slog.New(slog.DiscardHandler))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := clientWith(p, p.control)
	c.Transport = contractCheck{t: t, router: router, next: c.Transport}
	do := func(method, path string, out any) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		json.Unmarshal(raw, &e)
		if out != nil && resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(raw, out); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, e.Error.Code
	}

	var l messages.NodeImageList
	if st, _ := do("GET", "/v1/images", &l); st != 200 || len(l.Items) != 1 {
		t.Fatalf("list: %d %+v", st, l)
	}
	got := l.Items[0]
	if got.SHA256 != img.SHA256 || len(got.VMs) != 1 || got.VMs[0] != vmID || len(got.Aliases) != 1 ||
		got.Aliases[0] != "debian-12.img" || got.LastUsed == nil || got.SizeBytes <= 0 || got.VirtualSizeBytes != 1<<20 {
		t.Errorf("listed %+v, want %s used by %s", got, img.SHA256, vmID)
	}
	if st, code := do("DELETE", "/v1/images/"+img.SHA256, nil); st != 409 || code != "image_in_use" {
		t.Fatalf("delete while in use: %d %s", st, code)
	}
	if _, err := os.Stat(img.Path); err != nil {
		t.Fatal("the base of a disk was removed")
	}
	os.Remove(disk)
	if st, code := do("DELETE", "/v1/images/"+img.SHA256, nil); st != 204 {
		t.Fatalf("delete: %d %s", st, code)
	}
	if st, _ := do("GET", "/v1/images", &l); st != 200 || len(l.Items) != 0 {
		t.Errorf("after delete: %d %+v", st, l)
	}
	if st, code := do("DELETE", "/v1/images/"+img.SHA256, nil); st != 404 || code != "image_not_found" {
		t.Errorf("delete again: %d %s", st, code)
	}
	if st, code := do("DELETE", "/v1/images/..%2F..%2Fetc", nil); st != 400 && st != 404 {
		t.Errorf("delete of a path: %d %s", st, code)
	}
}
