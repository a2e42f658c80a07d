//go:build etcd

package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
	"github.com/otherix/otherix/watch"
)

// startWatchEnv is a control plane with a watch hub, at most perUser
// streams per user, and tokens re-checked every authCheck with no
// authentication cache (so a revoked token is noticed at the next check).
func startWatchEnv(t *testing.T, perUser int, authCheck time.Duration) *apiEnv {
	t.Helper()
	return startWatchEnvLimits(t, 0, perUser, authCheck)
}

// startWatchEnvLimits is startWatchEnv with a replica-wide stream limit too.
func startWatchEnvLimits(t *testing.T, maxClients, perUser int, authCheck time.Duration) *apiEnv {
	t.Helper()
	return startEnvTuned(t, identity.Config{AuthCacheTTL: -1}, func(c *Config, st *store.Store) {
		h := watch.New(st.Client(), watch.Config{}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
		c.Watch, c.WatchMaxClients, c.WatchPerUser, c.WatchAuthCheck = h, maxClients, perUser, authCheck
	})
}

// streamer is a client for watch streams: the contract-checking client
// reads whole bodies, which a stream never ends.
func (e *apiEnv) streamer(token string) *client.Client {
	e.t.Helper()
	c, err := client.New(e.url, client.WithToken(token))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// bearerOf logs in and returns the access token.
func (e *apiEnv) bearerOf(email, password string) string {
	return e.loginPair(email, password).AccessToken
}

// changes reads a stream's changes (bookmarks skipped) until stop says so
// or the deadline passes.
func changes(t *testing.T, w *client.WatchStream, stop func([]client.WatchEvent) bool) []client.WatchEvent {
	t.Helper()
	timer := time.AfterFunc(30*time.Second, func() { w.Close() })
	defer timer.Stop()
	var got []client.WatchEvent
	for !stop(got) {
		e, err := w.Next()
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		if e.Type != client.EventBookmark {
			got = append(got, e)
		}
	}
	return got
}

type row struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
}

func decodeRow(t *testing.T, e client.WatchEvent) row {
	t.Helper()
	var r row
	if err := json.Unmarshal(e.Data, &r); err != nil {
		t.Fatalf("event data %s: %v", e.Data, err)
	}
	return r
}

// TestWatchRBAC: a developer's stream carries its own VMs and tasks and
// never another user's, not even as a deletion; the admin's carries both.
// Lists carry meta.revision, from which the stream starts without a gap.
func TestWatchRBAC(t *testing.T) {
	e := startWatchEnv(t, 0, 0)
	ctx := t.Context()
	const devPassword = "developer-password-long-1"
	e.createUser("dev@example.com", string(security.RoleDeveloper), devPassword)
	devTok := e.bearerOf("dev@example.com", devPassword)
	dev := e.client(devTok)
	var since int64
	if _, _, err := dev.ListVMs(ctx, client.ListOptions{Revision: &since}); err != nil || since == 0 {
		t.Fatalf("list: revision %d, %v", since, err)
	}
	devStream, err := e.streamer(devTok).Watch(ctx, client.WatchOptions{Types: []string{"vms", "tasks"}, Since: since})
	if err != nil {
		t.Fatal(err)
	}
	defer devStream.Close()
	adminStream, err := e.streamer(e.bearerOf(adminEmail, adminPassword)).Watch(ctx, client.WatchOptions{Types: []string{"vms"}, Since: since})
	if err != nil {
		t.Fatal(err)
	}
	defer adminStream.Close()

	theirs, err := e.admin.CreateVM(ctx, vmRequest("theirs"))
	if err != nil {
		t.Fatal(err)
	}
	mine, err := dev.CreateVM(ctx, vmRequest("mine"))
	if err != nil {
		t.Fatal(err)
	}
	// Deleting the rows themselves: the watch reports what etcd holds,
	// whichever path removed it.
	for _, id := range []string{theirs.VM.ID, mine.VM.ID} {
		if _, err := e.st.Client().Delete(ctx, store.RowKey(store.VMs, id)); err != nil {
			t.Fatal(err)
		}
	}
	ownDeletion := func(got []client.WatchEvent) bool {
		return len(got) > 0 && got[len(got)-1].Type == watch.Deleted && decodeRow(t, got[len(got)-1]).ID == mine.VM.ID
	}
	for _, ev := range changes(t, devStream, ownDeletion) {
		if r := decodeRow(t, ev); r.Owner != mine.VM.Owner || r.ID == theirs.VM.ID || r.ID == theirs.Task.ID {
			t.Fatalf("developer saw %s %s of owner %s", ev.Type, r.ID, r.Owner)
		}
	}
	// The admin sees the other user's deletion: the filter, not a missing
	// event, kept it from the developer.
	seen := map[string]bool{}
	changes(t, adminStream, func(got []client.WatchEvent) bool {
		if n := len(got); n > 0 && got[n-1].Type == watch.Deleted {
			seen[decodeRow(t, got[n-1]).ID] = true
		}
		return seen[theirs.VM.ID] && seen[mine.VM.ID]
	})
}

// TestWatchRefusals: bad input gets stable codes before any stream starts.
func TestWatchRefusals(t *testing.T) {
	e := startWatchEnv(t, 0, 0)
	ctx := t.Context()
	tok := e.bearerOf(adminEmail, adminPassword)
	get := func(query string, header map[string]string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/v1/watch"+query, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return resp.StatusCode, ""
		}
		raw, _ := io.ReadAll(resp.Body)
		var env struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(raw, &env)
		return resp.StatusCode, env.Error.Code
	}
	for _, tc := range []struct {
		query  string
		header map[string]string
		status int
		code   string
	}{
		{"", nil, 400, "invalid_watch_types"},
		{"?types=vms,pools", nil, 400, "invalid_watch_types"},
		{"?types=vms&since=abc", nil, 400, "invalid_since"},
		{"?types=vms&since=-3", nil, 400, "invalid_since"},
		{"?types=vms", map[string]string{"Last-Event-ID": "x1"}, 400, "invalid_since"},
		{"?types=vms&since=999999999", nil, 400, "future_revision"},
	} {
		if status, code := get(tc.query, tc.header); status != tc.status || code != tc.code {
			t.Errorf("GET /v1/watch%s %v: %d %s, want %d %s", tc.query, tc.header, status, code, tc.status, tc.code)
		}
	}
	// A compacted revision is 410: the client must list again. History is
	// read from etcd only before what the hub has seen (later revisions
	// come from its own watch), so wait for the hub to see the writes.
	probe, err := e.streamer(tok).Watch(ctx, client.WatchOptions{Types: []string{"vms"}})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	var first, last *clientv3.PutResponse
	for i := range 3 {
		b, _ := json.Marshal(messages.VM{ID: "compact-me", Name: "compact-me", Owner: "u", Spec: messages.VMSpec{CPUs: i + 1}})
		last, err = e.st.Client().Put(ctx, store.RowKey(store.VMs, "compact-me"), string(b))
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = last
		}
	}
	changes(t, probe, func(got []client.WatchEvent) bool {
		return len(got) > 0 && got[len(got)-1].ID == last.Header.Revision
	})
	if _, err := e.st.Client().Compact(ctx, last.Header.Revision); err != nil {
		t.Fatal(err)
	}
	_, err = e.streamer(tok).Watch(ctx, client.WatchOptions{Types: []string{"vms"}, Since: first.Header.Revision})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusGone || ae.Code != "revision_compacted" {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
	// Without a token: 401, as every guarded route.
	if _, err := e.streamer("").Watch(ctx, client.WatchOptions{Types: []string{"vms"}}); client.ErrorCode(err) != "unauthenticated" {
		t.Fatalf("anonymous watch: %v", err)
	}
}

// TestWatchPerUserLimit: a user over the stream limit gets 429; closing a
// stream frees its place.
func TestWatchPerUserLimit(t *testing.T) {
	e := startWatchEnv(t, 2, 0)
	ctx := t.Context()
	c := e.streamer(e.bearerOf(adminEmail, adminPassword))
	var open []*client.WatchStream
	for range 2 {
		w, err := c.Watch(ctx, client.WatchOptions{Types: []string{"nodes"}})
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, w)
	}
	_, err := c.Watch(ctx, client.WatchOptions{Types: []string{"nodes"}})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != "too_many_watches" {
		t.Fatalf("third stream: %v", err)
	}
	open[0].Close()
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, "a freed stream slot", func() bool {
		w, err := c.Watch(ctx, client.WatchOptions{Types: []string{"nodes"}})
		if err == nil {
			w.Close()
		}
		return err == nil
	})
	open[1].Close()
}

// TestWatchReplicaLimit: over the replica's stream limit every user gets 429
// watch_capacity_reached, whatever their own count, and a closed stream
// frees its place for anyone.
func TestWatchReplicaLimit(t *testing.T) {
	e := startWatchEnvLimits(t, 2, 2, 0)
	ctx := t.Context()
	const devPassword = "developer-password-long-1"
	e.createUser("dev@example.com", string(security.RoleDeveloper), devPassword)
	admin := e.streamer(e.bearerOf(adminEmail, adminPassword))
	dev := e.streamer(e.bearerOf("dev@example.com", devPassword))
	a, err := admin.Watch(ctx, client.WatchOptions{Types: []string{"vms"}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dev.Watch(ctx, client.WatchOptions{Types: []string{"vms"}})
	if err != nil {
		t.Fatal(err)
	}
	// The developer has one stream of their two, but the replica is full.
	_, err = dev.Watch(ctx, client.WatchOptions{Types: []string{"vms"}})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != "watch_capacity_reached" {
		t.Fatalf("third stream on a full replica: %v", err)
	}
	a.Close()
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, "a freed replica slot", func() bool {
		w, err := dev.Watch(ctx, client.WatchOptions{Types: []string{"vms"}})
		if err == nil {
			w.Close()
		}
		return err == nil
	})
	d.Close()
}

// TestWatchTokenRevoked: a stream whose token stops being valid is closed
// with an error event naming token_expired, not left open or cut silently.
func TestWatchTokenRevoked(t *testing.T) {
	e := startWatchEnv(t, 0, 50*time.Millisecond)
	ctx := t.Context()
	tok, err := e.admin.CreateAPIToken(ctx, messages.CreateAPITokenRequest{Name: "watcher"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := e.streamer(tok.Token).Watch(ctx, client.WatchOptions{Types: []string{"vms"}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := e.admin.RevokeAPIToken(ctx, tok.APIToken.ID); err != nil {
		t.Fatal(err)
	}
	got := changes(t, w, func(got []client.WatchEvent) bool { return len(got) > 0 })
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	if got[0].Type != client.EventError || json.Unmarshal(got[0].Data, &body) != nil || body.Error.Code != "token_expired" {
		t.Fatalf("after revocation: %s %s", got[0].Type, got[0].Data)
	}
	if _, err := w.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream after the error event: %v", err)
	}
}

// TestWatchResumeAfterCut: WatchEach resumes a stream the server side cut
// with Last-Event-ID, and the changes made meanwhile arrive once each.
func TestWatchResumeAfterCut(t *testing.T) {
	e := startWatchEnv(t, 0, 0)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	c := e.streamer(e.bearerOf(adminEmail, adminPassword))
	var (
		mu  sync.Mutex
		got []client.WatchEvent
	)
	done := make(chan error, 1)
	go func() {
		done <- c.WatchEach(ctx, client.WatchOptions{Types: []string{"vms"}}, func(ev client.WatchEvent) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, ev)
			return nil
		})
	}()
	count := func(kind string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, ev := range got {
				if ev.Type == kind {
					n++
				}
			}
			return n > 0 && (kind != watch.Added || n >= wantAdded)
		}
	}
	wantAdded = 1
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "the starting bookmark", count(watch.Bookmark))
	if _, err := e.admin.CreateVM(ctx, vmRequest("before-cut")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "the first VM", count(watch.Added))
	e.ts.CloseClientConnections()
	wantAdded = 3
	for _, name := range []string{"after-cut-1", "after-cut-2"} {
		// The key makes the POST replayable, so the transport retries it
		// on a fresh connection when its kept-alive one was cut.
		if _, err := e.admin.CreateVM(ctx, vmRequest(name), client.WithIdempotencyKey("create-"+name)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "the VMs made after the cut", count(watch.Added))
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("WatchEach ended with %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	seen := map[int64]bool{}
	var last int64
	for _, ev := range got {
		if ev.ID < last || ev.Type != watch.Bookmark && seen[ev.ID] {
			t.Fatalf("event %s at %d after %d: repeated or out of order", ev.Type, ev.ID, last)
		}
		seen[ev.ID], last = true, ev.ID
	}
}

// wantAdded is how many added events TestWatchResumeAfterCut waits for.
var wantAdded int
