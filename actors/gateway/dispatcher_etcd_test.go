//go:build etcd

package gateway_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/messages"
)

// TestJobsBackingOffResumeAfterRestart stops a replica while its jobs wait out
// their backoff and starts a new one on the same store. The new dispatcher
// learns of the jobs only from its initial load, never from a watch event, so
// this fails if it does not arm a timer for them there: the jobs would then
// wait for the next full resync, which this test sets an hour away.
func TestJobsBackingOffResumeAfterRestart(t *testing.T) {
	cfg := gateway.Config{JobBackoffBase: 700 * time.Millisecond, JobBackoffMax: 700 * time.Millisecond,
		JobAttempts: 2, Resync: time.Hour}
	g, st := startGateway(t, cfg)
	_, task := createVM(t, g, "backing-off")
	if !eventually(t, 10*time.Second, func() bool {
		got, err := st.GetTask(context.Background(), task.ID)
		return err == nil && got.Message != "" // the first attempt failed and the job backs off
	}) {
		t.Fatal("first attempt never ran")
	}
	g.Close()

	cfg.Replica = "second-replica"
	cfg.AskTimeout = 5 * time.Second
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	g2, err := gateway.Start(context.Background(), st, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g2.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done, err := g2.WaitTask(ctx, "", task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != messages.TaskFailed || done.Error == nil || done.Error.Code != "no_schedulable_node" {
		t.Fatalf("task after restart = %s %+v, want failed with no_schedulable_node within 15s", done.State, done.Error)
	}
}
