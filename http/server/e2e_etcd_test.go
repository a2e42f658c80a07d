//go:build etcd

package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
	"github.com/otherix/otherix/security"
)

// Credentials of the admin every e2e control plane is bootstrapped with.
const (
	adminEmail    = "admin@example.com"
	adminPassword = "correct-horse-battery-staple-9"
)

// apiEnv is one in-process control plane and what the tests need to reach
// it: its URL, the contract-checking HTTP client, the gateway, and a client
// logged in as the bootstrapped admin.
type apiEnv struct {
	t     *testing.T
	url   string
	hc    *http.Client
	gw    *gateway.Gateway
	admin *client.Client
	// st and ts are the store and the HTTP server, for tests that write
	// to etcd directly or cut connections.
	st *store.Store
	ts *httptest.Server
}

// startAPI runs the whole control plane in-process and returns a client
// authenticated as the bootstrapped admin (see startEnv).
func startAPI(t *testing.T) *client.Client {
	t.Helper()
	return startEnv(t).admin
}

// startEnv runs the whole control plane in-process: a real embedded etcd in
// a temp dir, the store, the actor system behind the gateway, and this
// server over loopback HTTP. It bootstraps an admin, logs in over HTTP and
// keeps a client with that session. Every response any client of the env
// sees is checked against control-plane.yaml.
func startEnv(t *testing.T) *apiEnv {
	t.Helper()
	return startEnvWith(t, identity.Config{})
}

// startEnvWith is startEnv with an identity configuration (the zero value
// is the production one).
func startEnvWith(t *testing.T, idc identity.Config) *apiEnv {
	t.Helper()
	return startEnvTuned(t, idc, nil)
}

// startEnvTuned is startEnvWith whose server configuration tune may change
// (given the store) before the server is built.
func startEnvTuned(t *testing.T, idc identity.Config, tune func(*Config, *store.Store)) *apiEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := storetest.New(t)
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// A long job backoff keeps tasks pending after their first (failing,
	// node-less) attempt, so the tests can observe and cancel them. The
	// identity configuration is the production one.
	gw, err := gateway.Start(ctx, st, gateway.Config{JobBackoffBase: time.Minute, JobBackoffMax: time.Minute, Identity: idc}, log)
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	t.Cleanup(gw.Close)
	created, generated, err := gw.BootstrapAdmin(ctx, adminEmail, adminPassword)
	if err != nil || !created || generated != "" {
		t.Fatalf("bootstrap admin: created %v generated %q err %v", created, generated, err)
	}
	cfg := Config{MetricsEnabled: true}
	if tune != nil {
		tune(&cfg, st)
	}
	srv := New(cfg, gw, log)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	hc, _ := newContractClient(t, ts.URL)
	env := &apiEnv{t: t, url: ts.URL, hc: hc, gw: gw, st: st, ts: ts}
	anon := env.client("")
	testutil.EventuallyReport(t, 30*time.Second, 50*time.Millisecond, "control plane ready", func() (bool, string) {
		err := anon.Readyz(ctx)
		return err == nil, fmt.Sprint(err)
	})
	env.admin = env.login(adminEmail, adminPassword)
	me, err := env.admin.Me(ctx)
	if err != nil || me.Email != adminEmail || me.Role != string(security.RoleAdmin) {
		t.Fatalf("admin session: %+v %v", me, err)
	}
	return env
}

// client returns a client of the env that sends token as its bearer token
// ("" sends none).
func (e *apiEnv) client(token string) *client.Client {
	e.t.Helper()
	opts := []client.Option{client.WithHTTPClient(e.hc)}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	c, err := client.New(e.url, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// loginPair logs in over HTTP and returns the session's token pair.
func (e *apiEnv) loginPair(email, password string) *messages.TokenPair {
	e.t.Helper()
	pair, err := e.client("").Login(e.t.Context(), email, password)
	if err != nil {
		e.t.Fatalf("login %s: %v", email, err)
	}
	if pair.AccessToken == "" || pair.RefreshToken == "" || pair.TokenType != "Bearer" || pair.ExpiresIn <= 0 {
		e.t.Fatalf("login %s answered %+v", email, pair)
	}
	return pair
}

// login logs in over HTTP and returns a client bearing the access token.
func (e *apiEnv) login(email, password string) *client.Client {
	e.t.Helper()
	return e.client(e.loginPair(email, password).AccessToken)
}

// testWriter sends log lines to the test log, so they show only on failure.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func vmRequest(name string) messages.CreateVMRequest {
	return messages.CreateVMRequest{Name: name, Spec: messages.VMSpec{
		Image: messages.ImageSource{URL: "https://images.example/debian-12.qcow2"}, CPUs: 1, MemoryMiB: 256}}
}

func wantCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	apiErr, ok := err.(*client.APIError)
	if !ok || apiErr.Status != status || apiErr.Code != code {
		t.Fatalf("error %v, want %d %s", err, status, code)
	}
}

func TestE2ECreateGetList(t *testing.T) {
	c := startAPI(t)
	ctx := t.Context()
	a, err := c.CreateVM(ctx, vmRequest("web-0"))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if a.Location != "/v1/tasks/"+a.Task.ID || a.Task.State != messages.TaskPending || a.Task.Kind != messages.TaskVMCreate ||
		a.Task.Target.ID != a.VM.ID || a.VM.Name != "web-0" || a.VM.Spec.CPUs != 1 {
		t.Fatalf("create answered %+v task %+v vm %+v", a, a.Task, a.VM)
	}
	byID, err := c.GetVM(ctx, a.VM.ID)
	if err != nil || byID.Name != "web-0" {
		t.Fatalf("get by id: %+v %v", byID, err)
	}
	byName, err := c.GetVM(ctx, "web-0")
	if err != nil || byName.ID != a.VM.ID {
		t.Fatalf("get by name: %+v %v", byName, err)
	}
	_, err = c.GetVM(ctx, "nope")
	wantCode(t, err, 404, "not_found")
	task, err := c.GetTask(ctx, a.Task.ID)
	if err != nil || task.ID != a.Task.ID {
		t.Fatalf("get task: %+v %v", task, err)
	}

	want := []string{a.VM.ID}
	for i := 1; i < 7; i++ {
		a, err := c.CreateVM(ctx, vmRequest(fmt.Sprintf("web-%d", i)))
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		want = append(want, a.VM.ID)
	}
	var got []string
	cursor, pages := "", 0
	for {
		vms, next, err := c.ListVMs(ctx, client.ListOptions{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatalf("list page %d: %v", pages, err)
		}
		pages++
		for _, vm := range vms {
			got = append(got, vm.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if pages != 3 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("listed %v in %d pages, want %v in 3", got, pages, want)
	}
	tasks, _, err := c.ListTasks(ctx, client.ListOptions{Limit: 200})
	if err != nil || len(tasks) != 7 {
		t.Fatalf("tasks: %d %v", len(tasks), err)
	}
	_, _, err = c.ListVMs(ctx, client.ListOptions{Cursor: "!!"})
	wantCode(t, err, 400, "invalid_cursor")
}

func TestE2EBadWrites(t *testing.T) {
	c := startAPI(t)
	ctx := t.Context()
	if _, err := c.CreateVM(ctx, vmRequest("db")); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateVM(ctx, vmRequest("db"))
	wantCode(t, err, 409, "vm_name_conflict")
	for _, name := range []string{"DB", "-db", "db_1", "", "a-very-long-name-that-goes-on-and-on-past-the-sixty-three-character-limit"} {
		_, err := c.CreateVM(ctx, vmRequest(name))
		wantCode(t, err, 400, "invalid_field")
	}
	vms, _, err := c.ListVMs(ctx, client.ListOptions{})
	if err != nil || len(vms) != 1 {
		t.Fatalf("%d vms after bad creates (%v), want 1", len(vms), err)
	}
}

func TestE2EStalePatch(t *testing.T) {
	c := startAPI(t)
	ctx := t.Context()
	a, err := c.CreateVM(ctx, vmRequest("app"))
	if err != nil {
		t.Fatal(err)
	}
	old := a.VM.Revision
	// The VM's job may write its row meanwhile; retry a fresh read until a
	// patch lands, then send the first revision, now certainly stale.
	var patched *messages.VM
	for i := 0; patched == nil; i++ {
		vm, err := c.GetVM(ctx, "app")
		if err != nil {
			t.Fatal(err)
		}
		four := 4
		patched, err = c.UpdateVM(ctx, "app", messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &four}, Revision: vm.Revision})
		if err != nil && (client.ErrorCode(err) != "revision_conflict" || i > 10) {
			t.Fatalf("patch: %v", err)
		}
	}
	if patched.Spec.CPUs != 4 || patched.Generation != a.VM.Generation+1 || patched.Revision <= old {
		t.Fatalf("patched %+v", patched)
	}
	eight := 8
	_, err = c.UpdateVM(ctx, "app", messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &eight}, Revision: old})
	wantCode(t, err, 409, "revision_conflict")
	_, err = c.UpdateVM(ctx, "app", messages.UpdateVMRequest{Spec: messages.VMSpecPatch{CPUs: &eight}}, client.WithIfMatch(old))
	wantCode(t, err, 409, "revision_conflict")
	after, err := c.GetVM(ctx, "app")
	if err != nil || after.Spec.CPUs != 4 || after.Generation != patched.Generation {
		t.Fatalf("a stale patch changed the vm: %+v %v", after, err)
	}
}

func TestE2EConcurrentCreatesOneName(t *testing.T) {
	c := startAPI(t)
	ctx := t.Context()
	const n = 50
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = c.CreateVM(ctx, vmRequest("race")) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case client.ErrorCode(err) != "vm_name_conflict":
			t.Errorf("unexpected error %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creates won, want exactly 1", won)
	}
	vms, _, err := c.ListVMs(ctx, client.ListOptions{})
	if err != nil || len(vms) != 1 {
		t.Fatalf("%d vms (%v), want 1", len(vms), err)
	}
}

func TestE2EIdempotentCreate(t *testing.T) {
	c := startAPI(t)
	ctx := t.Context()
	key := client.WithIdempotencyKey("create-api-1")
	first, err := c.CreateVM(ctx, vmRequest("api"), key)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.CreateVM(ctx, vmRequest("api"), key)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !again.Replayed || again.Task.ID != first.Task.ID || again.VM.ID != first.VM.ID || again.Location != first.Location {
		t.Fatalf("retry answered %+v, first %+v", again, first)
	}
	_, err = c.CreateVM(ctx, vmRequest("api-2"), key)
	wantCode(t, err, 422, "idempotency_key_reused")

	// Many retries of one request at once still create one VM.
	var wg sync.WaitGroup
	key2 := client.WithIdempotencyKey("create-burst")
	for range 10 {
		wg.Go(func() {
			_, err := c.CreateVM(ctx, vmRequest("burst"), key2)
			if err != nil && client.ErrorCode(err) != "idempotency_in_progress" {
				t.Errorf("burst: %v", err)
			}
		})
	}
	wg.Wait()
	vms, _, err := c.ListVMs(ctx, client.ListOptions{})
	if err != nil || len(vms) != 2 {
		t.Fatalf("%d vms (%v), want api and burst", len(vms), err)
	}
	tasks, _, err := c.ListTasks(ctx, client.ListOptions{})
	if err != nil || len(tasks) != 2 {
		t.Fatalf("%d tasks (%v), want 2", len(tasks), err)
	}
}

func TestE2ETaskLongPoll(t *testing.T) {
	c := startAPI(t)
	ctx := t.Context()
	a, err := c.CreateVM(ctx, vmRequest("poll"))
	if err != nil {
		t.Fatal(err)
	}
	// A poll with a short window answers with the current state when it ends.
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	last, err := c.WaitTask(wctx, a.Task.ID, 10*time.Second)
	cancel()
	if last == nil || err == nil && !messages.Terminal(last.State) || time.Since(start) > 3*time.Second {
		t.Fatalf("short wait: %+v %v after %v", last, err, time.Since(start))
	}

	// A long poll in flight answers the moment the task ends.
	done := make(chan *messages.Task, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		task, err := c.WaitTask(wctx, a.Task.ID, 20*time.Second)
		if err != nil {
			t.Errorf("wait: %v", err)
		}
		done <- task
	}()
	// A head start for the long poll. If it has not reached the server when
	// the task ends, it returns at once and the assertions below still hold;
	// only the "answered the moment it ended" measurement is then weaker.
	time.Sleep(300 * time.Millisecond)
	// The job may be mid-attempt (running) for a moment.
	testutil.EventuallyReport(t, 10*time.Second, 50*time.Millisecond, "cancel the task", func() (bool, string) {
		_, err := c.CancelTask(ctx, a.Task.ID)
		return err == nil || client.ErrorCode(err) == "task_terminal", fmt.Sprint(err)
	})
	cancelled := time.Now()
	select {
	case task := <-done:
		if task == nil || !messages.Terminal(task.State) {
			t.Fatalf("long poll returned %+v", task)
		}
		if lag := time.Since(cancelled); lag > 5*time.Second {
			t.Errorf("long poll saw the end %v late", lag)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("long poll did not return after the task ended")
	}
	_, err = c.GetTask(ctx, messages.NewID())
	wantCode(t, err, 404, "not_found")
}
