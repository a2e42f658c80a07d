//go:build etcd

package job_test

import (
	"testing"
	"time"

	"github.com/otherix/otherix/actors/job"
	"github.com/otherix/otherix/actors/vm"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/storetest"
)

// TestJobsBackingOffResumeAfterRestart stops a replica while its jobs wait out
// their backoff and starts a new one on the same store. The new dispatcher
// learns of the jobs only from its initial load, never from a watch event, so
// this fails if it does not arm a timer for them there: the jobs would then
// wait for the next full resync, which this test sets an hour away.
func TestJobsBackingOffResumeAfterRestart(t *testing.T) {
	tune := func(replica string) func(*vm.Deps, *job.Config) {
		return func(d *vm.Deps, c *job.Config) {
			d.JobAttempts = 2
			c.Replica, c.Resync = replica, time.Hour
			c.BackoffBase, c.BackoffMax = 700*time.Millisecond, 700*time.Millisecond
		}
	}
	st := storetest.New(t)
	e := startOn(t, st, tune("first-replica"))
	_, task := e.createVM("backing-off")
	testutil.Eventually(t, 20*time.Second, 10*time.Millisecond, "the first attempt to fail and back off", func() bool {
		got, err := st.GetTask(t.Context(), task.ID)
		return err == nil && got.Message != ""
	})
	e.stop()

	startOn(t, st, tune("second-replica"))
	deadline := time.Now().Add(15 * time.Second)
	var done *messages.Task
	for {
		got, err := st.GetTask(t.Context(), task.ID)
		if err == nil && messages.Terminal(got.State) {
			done = got
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task after restart still %+v (%v) after 15s", got, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronization
	}
	if done.State != messages.TaskFailed || done.Error == nil || done.Error.Code != "no_schedulable_node" {
		t.Fatalf("task after restart = %s %+v, want failed with no_schedulable_node within 15s", done.State, done.Error)
	}
}
