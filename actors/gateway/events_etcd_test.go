//go:build etcd

package gateway_test

import (
	"testing"
	"time"

	"github.com/otherix/otherix/actors/maintenance"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/persistence/storetest"
)

// TestFailedCreateEvents: a create whose job runs out of attempts (no
// node) leaves two events, the VM's creation and the task's failure, the
// latter written with the task's outcome.
func TestFailedCreateEvents(t *testing.T) {
	g, st := startGateway(t, fastJobs())
	vm, task := createVM(t, g, "doomed")
	if got := waitTask(t, g, task.ID); got.State != messages.TaskFailed {
		t.Fatalf("task %s", got.State)
	}
	evs := storetest.Events(t, st)
	if len(evs) != 2 || evs[0].Type != messages.EventVMCreated || evs[1].Type != messages.EventTaskFailed {
		t.Fatalf("events %+v", evs)
	}
	row, err := st.GetTask(t.Context(), task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := evs[1]; e.Revision != row.Revision || e.Object.ID != task.ID || e.Object.Name != vm.Name || e.Owner != owner {
		t.Fatalf("task.failed %+v at %d, task at %d", e, e.Revision, row.Revision)
	}
}

// TestEventsLoopPrunes: the events loop, registered with the other
// maintenance loops, keeps the events within the settings' retention.
func TestEventsLoopPrunes(t *testing.T) {
	ran := make(chan maintenance.Ran, 16)
	cfg := fastJobs()
	cfg.EventsInterval = 20 * time.Millisecond
	cfg.OnMaintenance = func(r maintenance.Ran) {
		if r.Loop == "events" {
			select {
			case ran <- r:
			default:
			}
		}
	}
	g, st := startGateway(t, cfg)
	// Refused: a retention outside the bounds.
	bad := 5
	if _, err := g.UpdateSettings(t.Context(), messages.Principal{UserID: "admin"}, messages.SettingsPatch{EventRetentionCount: &bad}, 0); messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("count 5: %v", err)
	}
	badAge := "forever"
	if _, err := g.UpdateSettings(t.Context(), messages.Principal{UserID: "admin"}, messages.SettingsPatch{EventRetentionAge: &badAge}, 0); messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("age forever: %v", err)
	}
	var evs []*messages.Event
	for range 250 {
		evs = append(evs, messages.NewEvent(messages.EventVMStarted, "Test", messages.EventObject{Kind: "vm", ID: "x", Name: "x"}, owner, "", time.Now()))
	}
	for start := 0; start < len(evs); start += 100 {
		if err := st.Commit(t.Context(), store.AddEvents(store.NewTxn(), evs[start:start+min(100, len(evs)-start)]...)); err != nil {
			t.Fatal(err)
		}
	}
	count := 100
	if _, err := g.UpdateSettings(t.Context(), messages.Principal{UserID: "admin"}, messages.SettingsPatch{EventRetentionCount: &count}, 0); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyReport(t, 30*time.Second, 20*time.Millisecond, "events pruned to 100", func() (bool, string) {
		left := storetest.Events(t, st)
		return len(left) == 100 && left[0].ID == evs[150].ID, ""
	})
	select {
	case r := <-ran:
		if r.Err != nil {
			t.Fatalf("events loop: %v", r.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the events loop never reported a run")
	}
}
