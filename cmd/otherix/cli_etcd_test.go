//go:build etcd

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/storetest"
	"github.com/otherix/otherix/watch"
)

// The admin every test API bootstraps.
const (
	adminEmail    = "admin@localhost"
	adminPassword = "cli-admin-password-1"
)

// startAPI runs the real control plane in-process: embedded etcd, the
// actors and the REST API, with job backoffs short enough that a create
// with no node to go to fails within the test. It bootstraps the admin.
func startAPI(t *testing.T) string {
	t.Helper()
	return startAPIWith(t, identity.Config{})
}

// startAPIWith is startAPI with an identity configuration.
func startAPIWith(t *testing.T, idc identity.Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	st := storetest.New(t)
	gw, err := gateway.Start(ctx, st, gateway.Config{JobBackoffBase: 20 * time.Millisecond,
		JobBackoffMax: 50 * time.Millisecond, JobAttempts: 2, Identity: idc}, log)
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	t.Cleanup(gw.Close)
	if created, _, err := gw.BootstrapAdmin(ctx, adminEmail, adminPassword); err != nil || !created {
		t.Fatalf("bootstrap admin: created %v, %v", created, err)
	}
	// The replica's watch hub, for list -w.
	hub := watch.New(st.Client(), watch.Config{}, log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		hub.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	srv := httptest.NewServer(server.New(server.Config{Watch: hub}, gw, log).Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// cli runs the CLI with a config file of its own; the server and the
// credentials come from its current context, as for a user.
type cli struct {
	t     *testing.T
	cfg   string
	stdin string // stdin of the next command only
}

// newCLI logs in to url as the bootstrapped admin with a fresh config.
func newCLI(t *testing.T, url string) *cli {
	c := &cli{t: t, cfg: filepath.Join(t.TempDir(), "config")}
	c.login(url, adminEmail, adminPassword)
	return c
}

// login runs otherix login with the password on stdin, plus extra flags.
func (c *cli) login(url, email, password string, extra ...string) string {
	c.t.Helper()
	c.stdin = password + "\n"
	return c.ok(append([]string{"login", url, "--user", email, "--password-stdin"}, extra...)...)
}

// run runs a command and returns its exit code, stdout and stderr.
func (c *cli) run(args ...string) (int, string, string) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	code := runIO(context.Background(), append([]string{"--config", c.cfg}, args...), strings.NewReader(c.stdin), &out, &errOut)
	c.stdin = ""
	return code, out.String(), errOut.String()
}

// ok runs a command that must succeed and returns its stdout.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	code, stdout, stderr := c.run(args...)
	if code != 0 {
		c.t.Fatalf("otherix %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// fails runs a command that must fail mentioning want, and returns stderr.
func (c *cli) fails(want string, args ...string) string {
	c.t.Helper()
	code, stdout, stderr := c.run(args...)
	if code != 1 || !strings.Contains(stderr, want) {
		c.t.Fatalf("otherix %s: exit %d, want 1 with %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	return stderr
}

// settle waits for every task to end, so that the next operation on a VM
// is not refused as vm_busy.
func (c *cli) settle() {
	c.t.Helper()
	var tasks struct {
		Items []messages.Task `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("task", "list", "-o", "json")), &tasks); err != nil {
		c.t.Fatal(err)
	}
	for _, task := range tasks.Items {
		// Failed creates exit 1: settle only needs them finished.
		if code, _, stderr := c.run("task", "wait", task.ID, "--timeout", "30s"); code != 0 && strings.Contains(stderr, "[wait_timeout]") {
			c.t.Fatalf("task %s did not finish: %s", task.ID, stderr)
		}
	}
}

const image = "https://img.example/d.qcow2"

func TestCLIEndToEnd(t *testing.T) {
	c := newCLI(t, startAPI(t))

	out := c.ok("vm", "create", "web-1", "--image", image)
	if !strings.Contains(out, "TASK") || !strings.Contains(out, "vm.create") || !strings.Contains(out, "web-1") {
		t.Fatalf("create printed %q", out)
	}

	var vm messages.VM
	if err := json.Unmarshal([]byte(c.ok("vm", "get", "web-1", "-o", "json")), &vm); err != nil || vm.Name != "web-1" || vm.Spec.Image.URL != image {
		t.Fatalf("vm get -o json: %+v, %v", vm, err)
	}
	if out := c.ok("vm", "get", vm.ID, "-o", "yaml"); !strings.Contains(out, "name: web-1\n") {
		t.Fatalf("vm get by id -o yaml: %q", out)
	}
	if out := c.ok("vm", "list"); !strings.Contains(out, "NAME") || !strings.Contains(out, "web-1") {
		t.Fatalf("vm list: %q", out)
	}

	manifest := filepath.Join(t.TempDir(), "vms.yaml")
	body := "kind: VM\nname: web-2\nspec: {image: {url: " + image + "}, cpus: 2}\n---\n" +
		"apiVersion: otherix.io/v1\nkind: vm\nname: web-3\nspec: {image: {url: " + image + "}, power_state: stopped}\n"
	if err := os.WriteFile(manifest, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out = c.ok("create", "-f", manifest)
	for _, want := range []string{"vm/web-2 created (task ", "vm/web-3 created (task "} {
		if !strings.Contains(out, want) {
			t.Fatalf("create -f printed %q, want %q", out, want)
		}
	}
	if out := c.ok("vm", "list", "--limit", "1", "-o", "json"); strings.Count(out, `"name": "web-`) != 3 {
		t.Fatalf("paged list does not hold all three VMs: %s", out)
	}

	c.fails("[vm_name_conflict]", "vm", "create", "web-1", "--image", image)
	// Re-running create -f: each resource is named as already existing.
	stderr := c.fails("Error: 2 of 2 resources failed [already_exists]", "create", "-f", manifest)
	if !strings.Contains(stderr, "vm/web-2: vm/web-2 already exists (create -f makes new resources only; apply -f updates existing ones) [already_exists]") {
		t.Fatalf("create -f conflict: %s", stderr)
	}

	// No node has enrolled, so the create runs out of attempts: exactly what
	// --wait must report.
	c.fails("[no_schedulable_node]", "vm", "create", "x", "--image", image, "--wait", "--wait-timeout", "1m")
	if out := c.ok("vm", "describe", "x"); !strings.Contains(out, "Name:        x\n") || !strings.Contains(out, "Phase:") {
		t.Fatalf("describe: %s", out)
	}

	c.settle()
	c.ok("vm", "delete", "web-1", "--wait")
	c.fails("[not_found]", "vm", "get", "web-1")

	out = c.ok("task", "list")
	for _, want := range []string{"vm.create", "vm.delete", "success", "failed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("task list lacks %q:\n%s", want, out)
		}
	}

	c.ok("delete", "-f", manifest, "--wait")
	var left struct {
		Items []messages.VM `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("vm", "list", "-o", "json")), &left); err != nil || len(left.Items) != 1 || left.Items[0].Name != "x" {
		t.Fatalf("after delete -f: %+v, %v", left.Items, err)
	}
	c.fails("[not_found]", "delete", "-f", manifest)
	c.ok("delete", "-f", manifest, "--ignore-not-found")
}

// TestCLIIdentity walks what a new user does with several clusters: log in
// to two, switch between them, create a developer who cannot see the
// admin's VM, use an API token, and survive an expired access token.
func TestCLIIdentity(t *testing.T) {
	one, two := startAPI(t), startAPI(t)
	c := &cli{t: t, cfg: filepath.Join(t.TempDir(), "otherix", "config")}
	c.login(one, adminEmail, adminPassword, "--context", "one")
	c.login(two, adminEmail, adminPassword, "--context", "two")

	st, err := os.Stat(c.cfg)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config mode %v, %v; want 0600", st.Mode(), err)
	}
	if out := c.ok("config", "get-contexts"); !strings.Contains(out, "*         two") || !strings.Contains(out, "one") {
		t.Fatalf("get-contexts:\n%s", out)
	}

	// A VM on cluster two only; use-context switches which cluster answers.
	c.ok("vm", "create", "only-on-two", "--image", image, "--stopped")
	c.ok("vm", "get", "only-on-two")
	c.ok("config", "use-context", "one")
	if out := c.ok("whoami"); !strings.Contains(out, one) || !strings.Contains(out, adminEmail) || !strings.Contains(out, "admin") {
		t.Fatalf("whoami on one: %s", out)
	}
	c.fails("[not_found]", "vm", "get", "only-on-two")
	c.ok("--context", "two", "vm", "get", "only-on-two")

	// config view never shows a token.
	cfg, err := loadConfig(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	view := c.ok("config", "view")
	for _, cx := range cfg.Contexts {
		if cx.AccessToken == "" || cx.RefreshToken == "" || strings.Contains(view, cx.AccessToken) || strings.Contains(view, cx.RefreshToken) {
			t.Fatalf("config view leaks a token or a context has none:\n%s", view)
		}
	}

	// The admin's VM on one; a developer the admin creates cannot see it.
	c.ok("vm", "create", "admins", "--image", image, "--stopped")
	c.stdin = "developer-password-1\n"
	c.ok("user", "create", "dev@example.com", "--role", "developer", "--display-name", "Dev", "--password-stdin")
	if out := c.ok("user", "list"); !strings.Contains(out, "dev@example.com") || !strings.Contains(out, "developer") {
		t.Fatalf("user list: %s", out)
	}
	c.login(one, "dev@example.com", "developer-password-1", "--context", "dev")
	c.fails("[not_found]", "vm", "get", "admins")
	if out := c.ok("vm", "list"); strings.Contains(out, "admins") {
		t.Fatalf("the developer lists the admin's VM: %s", out)
	}
	c.ok("vm", "create", "devs", "--image", image, "--stopped")
	if out := c.ok("--context", "one", "vm", "list"); !strings.Contains(out, "devs") || !strings.Contains(out, "admins") {
		t.Fatalf("the admin does not see every VM: %s", out)
	}

	// An API token, created by the admin, logs in with --token.
	var created messages.CreatedAPIToken
	if err := json.Unmarshal([]byte(c.ok("--context", "one", "token", "create", "ci", "-o", "json")), &created); err != nil || !strings.HasPrefix(created.Token, "otx_") {
		t.Fatalf("token create: %+v, %v", created, err)
	}
	c.ok("login", one, "--token", created.Token, "--context", "ci")
	if out := c.ok("whoami"); !strings.Contains(out, adminEmail) {
		t.Fatalf("whoami with the API token: %s", out)
	}
	c.ok("vm", "get", "admins")
	if out := c.ok("--context", "one", "token", "list"); !strings.Contains(out, created.APIToken.ID) {
		t.Fatalf("token list: %s", out)
	}
	c.ok("--context", "one", "token", "revoke", created.APIToken.ID)
	// Token lookups may be cached for a few seconds; revocation must show
	// within them.
	var code int
	var stderr string
	if !testutil.Until(15*time.Second, 200*time.Millisecond, func() bool {
		code, _, stderr = c.run("vm", "list")
		return code == 1 && strings.Contains(stderr, "[unauthenticated]")
	}) {
		t.Fatalf("the revoked token still works: exit %d, %s", code, stderr)
	}

	// A corrupt (as good as expired) access token is refreshed on the next
	// command, and the rotated pair is saved.
	c.ok("config", "use-context", "one")
	cfg, err = loadConfig(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cx := cfg.context("one")
	oldRefresh := cx.RefreshToken
	cx.AccessToken = "eyJhbGciOiJIUzI1NiJ9.bm90LWEtand0.c2ln"
	if err := saveConfig(c.cfg, cfg); err != nil {
		t.Fatal(err)
	}
	c.ok("vm", "get", "admins")
	cfg, _ = loadConfig(c.cfg)
	if cx := cfg.context("one"); cx.RefreshToken == oldRefresh || cx.AccessToken == "eyJhbGciOiJIUzI1NiJ9.bm90LWEtand0.c2ln" {
		t.Fatalf("the refreshed pair was not saved: %+v", cx)
	}
	c.ok("vm", "get", "admins")

	// Logout ends the session on the server and forgets it locally.
	c.ok("logout")
	c.fails("[unauthenticated]", "vm", "list")
	cfg, _ = loadConfig(c.cfg)
	if cx := cfg.context("one"); cx.AccessToken != "" || cx.RefreshToken != "" {
		t.Fatalf("logout kept tokens: %+v", cx)
	}
}
