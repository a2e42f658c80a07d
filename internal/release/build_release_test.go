//go:build release

package release

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBuildOneArch runs the whole builder for this machine's architecture
// with real `go build`s: every artifact is made, SHA256SUMS verifies, the
// binaries report the stamped version, the packages carry them, the SBOM
// lists the control plane's main dependencies, and the image holds the
// real otherix-api. `make test-release` runs it (build tag release): it
// links three binaries, which takes a while on a busy machine.
func TestBuildOneArch(t *testing.T) {
	arch := runtime.GOARCH
	if !slices.Contains(Arches, arch) {
		t.Skipf("GOARCH %s is not a release architecture", arch)
	}
	out := filepath.Join(t.TempDir(), "dist")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	a, err := Build(ctx, Options{Version: "0.9.1", Commit: "0123456789abcdef", Date: testTime.Format(time.RFC3339),
		ModuleDir: moduleDir(t), Out: out, Arches: []string{arch}})
	if err != nil {
		t.Fatal(err)
	}
	checked, err := VerifySums(out, a.Sums)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(a.Binaries) + len(a.Debs) + len(a.Images) + 1; len(checked) != want {
		t.Errorf("SHA256SUMS covers %d files, want %d: %v", len(checked), want, checked)
	}
	for _, b := range Binaries {
		bin := filepath.Join(out, b+"_0.9.1_linux_"+arch)
		arg := "--version"
		if b != "otherix-api" {
			arg = "version"
		}
		args := []string{arg}
		if b == "otherix" {
			args = append(args, "--client")
		}
		got, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(got), "0.9.1") {
			t.Errorf("%s %v: %v %q, want the stamped version", b, args, err, got)
		}
		deb := readDeb(t, filepath.Join(out, b+"_0.9.1_"+arch+".deb"))
		want, _ := os.ReadFile(bin)
		if !bytes.Equal(deb.data["./usr/bin/"+b].body, want) {
			t.Errorf("%s package does not carry the built binary", b)
		}
		if b == "otherix" {
			page := deb.data["./usr/share/man/man1/otherix-vm-create.1.gz"]
			zr, err := gzip.NewReader(bytes.NewReader(page.body))
			if err != nil {
				t.Fatalf("otherix package: man page of vm create: %v", err)
			}
			text, _ := io.ReadAll(zr)
			if !strings.Contains(string(text), "otherix 0.9.1") || !strings.Contains(string(text), "--image") {
				t.Errorf("man page of vm create does not name the release or --image:\n%.400s", text)
			}
		}
	}
	comps := componentVersions(decodeSBOM(t, filepath.Join(out, a.SBOM)))
	for _, m := range []string{"go.etcd.io/etcd/server/v3", "github.com/asynkron/protoactor-go", "github.com/gin-gonic/gin", "github.com/digitalocean/go-qemu", "github.com/spf13/cobra"} {
		if comps[m] == "" {
			t.Errorf("SBOM lacks %s", m)
		}
	}
	// Packaging tools are not in the programs, so not in their SBOM.
	if comps["github.com/goreleaser/nfpm/v2"] != "" {
		t.Errorf("SBOM lists nfpm, which no shipped binary links")
	}
	api, _ := os.ReadFile(filepath.Join(out, "otherix-api_0.9.1_linux_"+arch))
	img := filepath.Join(out, a.Images[0])
	checkImage(t, img, arch, api)
	t.Run("dpkg", func(t *testing.T) { dpkgLifecycle(t, out, arch, "0.9.1") })
	t.Run("docker", func(t *testing.T) { dockerHealthz(t, img) })
}

// dockerHealthz loads the image into a Docker daemon, runs it and reaches
// /healthz, where a daemon is reachable; it removes the container and the
// image whatever happens.
func dockerHealthz(t *testing.T, img string) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker not installed: the image was inspected, not run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker daemon reachable (%s): the image was inspected, not run", strings.TrimSpace(string(out)))
	}
	ref := ImageRepo + ":0.9.1"
	if out, err := exec.CommandContext(ctx, "docker", "load", "-i", img).CombinedOutput(); err != nil {
		t.Fatalf("docker load: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", ref).Run() })
	out, err := exec.CommandContext(ctx, "docker", "run", "-d", "-p", "127.0.0.1::7080", ref).CombinedOutput()
	if err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	id := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", "-v", id).Run() })
	out, err = exec.CommandContext(ctx, "docker", "port", id, "7080/tcp").CombinedOutput()
	if err != nil {
		t.Fatalf("docker port: %v\n%s", err, out)
	}
	addr := strings.TrimSpace(strings.Split(string(out), "\n")[0])
	// Liveness only: the certificate is the cluster CA's, made at first
	// boot inside the container, so it is not verified here.
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for {
		resp, err := hc.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			logs, _ := exec.Command("docker", "logs", id).CombinedOutput()
			t.Fatalf("/healthz never answered 200 (last error %v)\n%s", err, logs)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
