//go:build etcd

package schema

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/persistence/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

// emptyStore is a member holding nothing under /otherix/ (storetest seeds
// the settings, as a booting otherix-api does after Ensure).
func emptyStore(t *testing.T) *clientv3.Client {
	t.Helper()
	cli := storetest.New(t).Client()
	if _, err := cli.Delete(t.Context(), root, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	return cli
}

func stored(t *testing.T, cli *clientv3.Client) (Document, int64) {
	t.Helper()
	resp, err := cli.Get(t.Context(), Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return Document{}, 0
	}
	var d Document
	if err := json.Unmarshal(resp.Kvs[0].Value, &d); err != nil {
		t.Fatal(err)
	}
	return d, resp.Kvs[0].ModRevision
}

// TestEnsureNewStore: an empty store is stamped at the current version
// without running any migration; a second start writes nothing.
func TestEnsureNewStore(t *testing.T) {
	cli := emptyStore(t)
	var ran atomic.Int32
	migs := []Migration{{To: 1, Name: "one", Run: func(context.Context, *clientv3.Client) error { ran.Add(1); return nil }}}
	if err := ensure(t.Context(), cli, 1, migs, "otherix-api test", time.Now, quiet); err != nil {
		t.Fatal(err)
	}
	d, rev := stored(t, cli)
	if d.Version != 1 || d.WrittenBy != "otherix-api test" || ran.Load() != 0 {
		t.Fatalf("new store: %+v, migrations run %d", d, ran.Load())
	}
	if err := ensure(t.Context(), cli, 1, migs, "otherix-api other", time.Now, quiet); err != nil {
		t.Fatal(err)
	}
	if _, again := stored(t, cli); again != rev {
		t.Fatal("a start at the current version wrote the document")
	}
}

// TestEnsureMigratesLegacyData: a store with data and no document is
// version 0; migrations run in order up to current, and only those.
func TestEnsureMigratesLegacyData(t *testing.T) {
	cli := emptyStore(t)
	if _, err := cli.Put(t.Context(), "/otherix/vms/x", "{}"); err != nil {
		t.Fatal(err)
	}
	var order []int
	step := func(n int) func(context.Context, *clientv3.Client) error {
		return func(ctx context.Context, c *clientv3.Client) error {
			order = append(order, n)
			_, err := c.Put(ctx, "/otherix/migrated", "x")
			return err
		}
	}
	migs := []Migration{{To: 1, Run: step(1)}, {To: 2, Run: step(2)}, {To: 3, Run: step(3)}}
	if err := ensure(t.Context(), cli, 2, migs, "v2", time.Now, quiet); err != nil {
		t.Fatal(err)
	}
	if d, _ := stored(t, cli); d.Version != 2 || len(order) != 2 || order[0] != 1 || order[1] != 2 {
		t.Fatalf("after migrating to 2: %+v, ran %v", d, order)
	}
	if err := ensure(t.Context(), cli, 3, migs, "v3", time.Now, quiet); err != nil {
		t.Fatal(err)
	}
	if d, _ := stored(t, cli); d.Version != 3 || len(order) != 3 || order[2] != 3 {
		t.Fatalf("after migrating to 3: %+v, ran %v", d, order)
	}
}

// TestEnsureRefusesNewerData: an older binary refuses a store a newer one
// wrote, names both versions and the writer, and changes nothing.
func TestEnsureRefusesNewerData(t *testing.T) {
	cli := emptyStore(t)
	if err := ensure(t.Context(), cli, 3, []Migration{{To: 1}, {To: 2}, {To: 3}}, "otherix-api 1.6.0", time.Now, quiet); err != nil {
		t.Fatal(err)
	}
	_, rev := stored(t, cli)
	err := ensure(t.Context(), cli, 2, []Migration{{To: 1}, {To: 2}}, "otherix-api 1.5.0", time.Now, quiet)
	var tn *TooNewError
	if !errors.As(err, &tn) || tn.Stored != 3 || tn.Supported != 2 || !strings.Contains(err.Error(), "otherix-api 1.6.0") {
		t.Fatalf("older binary on newer data: %v", err)
	}
	if _, after := stored(t, cli); after != rev {
		t.Fatal("the refusal wrote the document")
	}
}

// TestEnsureConcurrentReplicas: replicas starting together on old data
// each run the (idempotent) migrations; the version moves once per step
// and ends at current for all of them.
func TestEnsureConcurrentReplicas(t *testing.T) {
	cli := emptyStore(t)
	if _, err := cli.Put(t.Context(), "/otherix/vms/x", "{}"); err != nil {
		t.Fatal(err)
	}
	migs := []Migration{{To: 1}, {To: 2, Run: func(ctx context.Context, c *clientv3.Client) error {
		_, err := c.Put(ctx, "/otherix/flag", "set") // idempotent
		return err
	}}}
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- ensure(t.Context(), cli, 2, migs, "r", time.Now, quiet)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	resp, err := cli.Get(t.Context(), Key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(err)
	}
	if d, _ := stored(t, cli); d.Version != 2 || resp.Kvs[0].Version != 2 {
		t.Fatalf("document %+v written %d times, want version 2 written twice (0→1, 1→2)", d, resp.Kvs[0].Version)
	}
}

// TestWatchNewer: a running replica learns when a newer one moves the
// store past it, and not before.
func TestWatchNewer(t *testing.T) {
	cli := emptyStore(t)
	if err := ensure(t.Context(), cli, 1, []Migration{{To: 1}}, "old", time.Now, quiet); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- watchNewer(t.Context(), cli, 1) }()
	// A rewrite at the same version is no reason to stop.
	if err := put(t, cli, Document{Version: 1, WrittenBy: "old"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("watch returned at the same version: %v", err)
	default:
	}
	if err := put(t, cli, Document{Version: 2, WrittenBy: "otherix-api 1.6.0"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		var tn *TooNewError
		if !errors.As(err, &tn) || tn.Stored != 2 {
			t.Fatalf("watch ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the watch did not see the newer version")
	}
}

func put(t *testing.T, cli *clientv3.Client, d Document) error {
	b, _ := json.Marshal(d)
	_, err := cli.Put(t.Context(), Key, string(b))
	return err
}
