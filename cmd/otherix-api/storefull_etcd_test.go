//go:build etcd

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/schema"
	"github.com/otherix/otherix/persistence/store"
)

const (
	fullQuota     = 4 << 20
	fullAdmin     = "admin@example.com"
	fullAdminPass = "correct-horse-battery-staple-9"
)

// apiRun is one run of otherix-api in-process, through the same run() the
// binary uses, on a config file as an operator writes it.
type apiRun struct {
	url  string
	stop func() error
	// agent is the agent listener's address.
	agent string
}

func startRun(t *testing.T, dataDir, extraYAML string) *apiRun {
	t.Helper()
	return launchRun(t, dataDir, extraYAML)()
}

// launchRun starts otherix-api and returns the wait for it to be ready,
// for callers that start several at once (a joining replica is ready
// only once another joins). Call the wait from the test's goroutine.
func launchRun(t *testing.T, dataDir, extraYAML string) func() *apiRun {
	t.Helper()
	wait := launchRunErr(t, dataDir, extraYAML)
	return func() *apiRun {
		t.Helper()
		r, err := wait()
		if err != nil {
			t.Fatalf("otherix-api did not start: %v", err)
		}
		return r
	}
}

// tryRun starts otherix-api in-process and returns it once it serves, or
// the error it stopped with before that.
func tryRun(t *testing.T, dataDir, extraYAML string) (*apiRun, error) {
	t.Helper()
	return launchRunErr(t, dataDir, extraYAML)()
}

// launchRunErr is launchRun whose wait answers the error otherix-api
// stopped with before it served.
func launchRunErr(t *testing.T, dataDir, extraYAML string) func() (*apiRun, error) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "otherix-api.yaml")
	yaml := fmt.Sprintf(`data_dir: %s
listen: 127.0.0.1:0
agent_listen: 127.0.0.1:0
tls:
  enabled: false
admin:
  email: %s
  password: %s
log:
  level: warn
%s`, dataDir, fullAdmin, fullAdminPass, extraYAML)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := rootCommand().Flags()
	if err := flags.Set("config", conf); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(flags)
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan listeners, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, log, func(l listeners) { ready <- l }) }()
	return func() (*apiRun, error) {
		t.Helper()
		return awaitRun(t, ready, done, cancel)
	}
}

func awaitRun(t *testing.T, ready chan listeners, done chan error, cancel context.CancelFunc) (*apiRun, error) {
	t.Helper()
	select {
	case l := <-ready:
		r := &apiRun{url: "http://" + l.REST.String(), agent: l.Agent.String()}
		var once bool
		r.stop = func() error {
			if once {
				return nil
			}
			once = true
			cancel()
			select {
			case err := <-done:
				return err
			case <-time.After(time.Minute):
				return errors.New("otherix-api did not stop within a minute")
			}
		}
		t.Cleanup(func() { _ = r.stop() })
		return r, nil
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("stopped without an error before serving")
		}
		return nil, err
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatal("otherix-api not ready after two minutes")
	}
	return nil, nil
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// call sends one JSON request and returns the status, the error code of an
// error envelope, and the body.
func (r *apiRun) call(t *testing.T, method, path, token string, body any) (int, string, []byte) {
	t.Helper()
	return r.callKey(t, method, path, token, "", body)
}

// callKey is call with an Idempotency-Key when key is set.
func (r *apiRun) callKey(t *testing.T, method, path, token, key string, body any) (int, string, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, r.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var env struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &env)
	return resp.StatusCode, env.Error.Code, data
}

func (r *apiRun) login(t *testing.T) (int, string, string) {
	t.Helper()
	status, code, body := r.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": fullAdmin, "password": fullAdminPass})
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(body, &tok)
	return status, code, tok.AccessToken
}

// metric reports whether /metrics has the sample name (with its labels)
// at value.
func (r *apiRun) metric(t *testing.T, name string, value float64) bool {
	t.Helper()
	status, _, body := r.call(t, "GET", "/metrics", "", nil)
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d", status)
	}
	for _, l := range strings.Split(string(body), "\n") {
		v, ok := strings.CutPrefix(l, name+" ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		return err == nil && f == value
	}
	return false
}

var vmCreate = map[string]any{"name": "web-1", "spec": map[string]any{
	"image": map[string]any{"url": "http://127.0.0.1:9/image.qcow2"}, "cpus": 1, "memory_mib": 256, "disk_gib": 1}}

// TestRestartOnFullStore is the operator's story of a full store. The
// store of a running cluster fills up with audit entries (as a flood of
// anonymous login attempts did); otherix-api starts on it cleanly, answers
// reads with 200 and writes with 507 storage_full, shows the alarm on
// /metrics, and stops cleanly. Started again once the entries have aged
// past retention, it deletes them, compacts, defragments and disarms the
// alarm by itself, and writes work again.
func TestRestartOnFullStore(t *testing.T) {
	dataDir := t.TempDir()
	quota := fmt.Sprintf("etcd:\n  quota_bytes: %d\n  space_check_interval: 1s\n", fullQuota)

	// A healthy first boot: the admin is bootstrapped, a session opened.
	r := startRun(t, dataDir, quota)
	status, code, token := r.login(t)
	if status != http.StatusOK || token == "" {
		t.Fatalf("login on a healthy store: %d %s", status, code)
	}
	if !r.metric(t, `otherix_store_alarm{type="nospace"}`, 0) || !r.metric(t, "otherix_store_quota_bytes", fullQuota) {
		t.Fatal("/metrics lacks the store's alarm gauge at 0 or its quota")
	}
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	fillStore(t, dataDir)

	// Restart on the full store, audit entries still within retention.
	r = startRun(t, dataDir, quota+"audit:\n  retention: 720h\n")
	if !r.metric(t, `otherix_store_alarm{type="nospace"}`, 1) {
		t.Fatal("/metrics does not show the nospace alarm on a full store")
	}
	if status, code, body := r.call(t, "GET", "/v1/vms", token, nil); status != http.StatusOK {
		t.Fatalf("read on a full store: %d %s %s", status, code, body)
	}
	if status, code, body := r.call(t, "POST", "/v1/vms", token, vmCreate); status != http.StatusInsufficientStorage || code != "storage_full" {
		t.Fatalf("vm create on a full store: %d %s %s; want 507 storage_full", status, code, body)
	}
	// With an Idempotency-Key the reservation is the first write refused.
	if status, code, body := r.callKey(t, "POST", "/v1/vms", token, "full-1", vmCreate); status != http.StatusInsufficientStorage || code != "storage_full" {
		t.Fatalf("keyed vm create on a full store: %d %s %s; want 507 storage_full", status, code, body)
	}
	if status, code, _ := r.login(t); status != http.StatusInsufficientStorage || code != "storage_full" {
		t.Fatalf("login (a write) on a full store: %d %s; want 507 storage_full", status, code)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("stop on a full store: %v", err)
	}

	// Restart once the entries are past retention: it recovers by itself.
	r = startRun(t, dataDir, quota+"audit:\n  retention: 1ns\n")
	// Poll the alarm gauge, not a login: logins are rate limited.
	if !testutil.Until(time.Minute, 50*time.Millisecond, func() bool { return r.metric(t, `otherix_store_alarm{type="nospace"}`, 0) }) {
		t.Fatal("the nospace alarm is still raised a minute after a start with the garbage past retention")
	}
	status, code, token = r.login(t)
	if status != http.StatusOK {
		t.Fatalf("login after recovery: %d %s", status, code)
	}
	// The retry under the same key runs: a 507 was never stored.
	if status, code, body := r.callKey(t, "POST", "/v1/vms", token, "full-1", vmCreate); status != http.StatusAccepted {
		t.Fatalf("vm create after recovery: %d %s %s", status, code, body)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// fillStore opens the stopped API's data dir, removes its data format
// stamp and appends audit entries until etcd raises its space alarm.
func fillStore(t *testing.T, dataDir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, etcd.Config{DataDir: dataDir, QuotaBytes: fullQuota})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// As a store written before data format versions: the restart on it,
	// full, must still boot, with the stamp deferred.
	if _, err := m.Client().Delete(ctx, schema.Key); err != nil {
		t.Fatal(err)
	}
	st := store.New(m.Client(), store.WithMaxTxnOps(m.MaxTxnOps()))
	pad := strings.Repeat("a", 512)
	for i := 0; i < 100_000; i++ {
		batch := make([]messages.AuditEntry, 64)
		for j := range batch {
			batch[j] = messages.AuditEntry{Time: time.Now(), Actor: pad, Action: "auth.login", Result: "failed"}
		}
		if err := st.AppendAudit(ctx, batch); err != nil {
			if !store.IsNoSpace(err) {
				t.Fatalf("fill: %v", err)
			}
			s, err := m.Status(ctx)
			if err != nil || !s.NoSpace {
				t.Fatalf("filled store: %+v, %v; want the alarm raised", s, err)
			}
			return
		}
	}
	t.Fatal("the store never filled up")
}
