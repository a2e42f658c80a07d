//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// TestKill9LosesNoAcknowledgedWriteAndResumesJobs crashes otherix-api with
// SIGKILL while jobs are claimed and mid-retry, restarts it on the same data
// dir, and checks that every acknowledged VM is there and that the jobs are
// reclaimed after their lease and carried on to their end.
func TestKill9LosesNoAcknowledgedWriteAndResumesJobs(t *testing.T) {
	dir := t.TempDir()
	// Attempts two seconds apart, so the kill lands while the jobs are
	// between attempts even on a loaded machine.
	env := []string{"OTHERIX_JOBS__CLAIM_TTL=2s", "OTHERIX_JOBS__ATTEMPTS=3", "OTHERIX_JOBS__BACKOFF_BASE=2s",
		"OTHERIX_JOBS__BACKOFF_MAX=2s", "OTHERIX_LOG__LEVEL=warn"}
	api := startAPI(t, dir, env...)

	var mu sync.Mutex
	acked := map[string]accepted{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			a := createVM(t, api.URL, fmt.Sprintf("crash-%02d", i))
			mu.Lock()
			acked[a.VM.ID] = a
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	// Wait until the first job has been tried once, so jobs are mid-flight.
	var first accepted
	for _, a := range acked {
		first = a
		break
	}
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "a first job attempt", func() bool {
		msg := getTask(t, api.URL, first.Task.ID).Message
		if strings.Contains(msg, "after 3 attempts") {
			t.Fatalf("all attempts ran before the kill; the test no longer kills mid-flight: %q", msg)
		}
		return strings.Contains(msg, "attempt 1 of 3") || strings.Contains(msg, "attempt 2 of 3")
	})
	api.kill9()

	api = startAPI(t, dir, env...)
	for id, a := range acked {
		var got vm
		if code := call(t, "GET", api.URL+"/v1/vms/"+id, nil, &got); code != http.StatusOK || got.Name != a.VM.Name {
			t.Fatalf("acknowledged vm %s (%s) after kill -9: status %d, got %+v", id, a.VM.Name, code, got)
		}
	}
	// Every job resumes after the dead replica's lease expires and runs out
	// its attempt budget: the cluster has no node to place the VMs on.
	for _, a := range acked {
		var tk task
		testutil.Eventually(t, 90*time.Second, 50*time.Millisecond, "task "+a.Task.ID+" to end", func() bool {
			call(t, "GET", api.URL+"/v1/tasks/"+a.Task.ID+"?wait=10s", nil, &tk)
			return tk.State == "failed" || tk.State == "success"
		})
		if tk.State != "failed" || tk.Error == nil || tk.Error.Code != "no_schedulable_node" {
			t.Fatalf("task %s ended %+v, want failed with no_schedulable_node", a.Task.ID, tk)
		}
		mustContain(t, tk.Message, "after 3 attempts")
	}
	api.stop()
}

// TestSnapshotAndRestore lets the backup loop snapshot a live API, then
// rebuilds a fresh data dir with `otherix-api restore` and serves from it.
func TestSnapshotAndRestore(t *testing.T) {
	dir := t.TempDir()
	backups := filepath.Join(t.TempDir(), "backups")
	api := startAPI(t, filepath.Join(dir, "a"), "OTHERIX_BACKUP__DIR="+backups, "OTHERIX_BACKUP__INTERVAL=500ms",
		"OTHERIX_BACKUP__KEEP=3", "OTHERIX_LOG__LEVEL=warn")
	a := createVM(t, api.URL, "kept")
	var snaps []string
	testutil.Eventually(t, 30*time.Second, 50*time.Millisecond, "snapshots taken after the create", func() bool {
		snaps, _ = filepath.Glob(filepath.Join(backups, "*.snap.db"))
		if len(snaps) < 2 {
			return false
		}
		fi, err := os.Stat(snaps[len(snaps)-1])
		return err == nil && fi.ModTime().After(time.Now().Add(-time.Minute))
	})
	api.stop()
	snaps, _ = filepath.Glob(filepath.Join(backups, "*.snap.db"))
	if len(snaps) > 3 {
		t.Fatalf("retention kept %d snapshots, want at most 3", len(snaps))
	}

	restored := filepath.Join(dir, "b")
	out, err := runBinary(t, "otherix-api", "restore", "--from", snaps[len(snaps)-1], "--data-dir", restored)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if _, err := runBinary(t, "otherix-api", "restore", "--from", snaps[len(snaps)-1], "--data-dir", restored); err == nil {
		t.Fatal("restore into a data dir that holds a member was accepted")
	}
	api = startAPI(t, restored, "OTHERIX_LOG__LEVEL=warn")
	var got vm
	if code := call(t, "GET", api.URL+"/v1/vms/"+a.VM.ID, nil, &got); code != http.StatusOK || got.Name != "kept" {
		t.Fatalf("vm after restore: status %d, %+v", code, got)
	}
	api.stop()
}
