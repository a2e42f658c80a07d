//go:build etcd

package vm_test

import (
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

// TestJobCommands: a job's attempt reads its task and VM through the VM's
// actor and writes its progress and its retry through it, each under the
// job's claim; the task of a VM that is gone can still be read.
func TestJobCommands(t *testing.T) {
	h := start(t)
	ctx := t.Context()
	id := messages.NewID()
	r := h.ask(id, messages.CreateVM{Owner: "u", Name: "w", Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://x.test/a.img"}}})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	task := r.Task
	d, err := h.st.NewDispatcher(ctx, "r1", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	j, err := h.st.GetJob(ctx, task.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Claim(ctx, j); err != nil {
		t.Fatal(err)
	}
	lease := int64(d.Lease())

	view := h.ask(id, messages.GetVMJob{TaskID: task.ID})
	if view.Err != nil || view.VM == nil || view.VM.ID != id || view.Task == nil || view.Task.ID != task.ID || view.Task.State != messages.TaskPending {
		t.Fatalf("job view: %+v", view)
	}

	running := *view.Task
	running.State, running.AgentTaskID, running.Progress, running.Message = messages.TaskRunning, j.ID, 40, "fetching image"
	if r := h.ask(id, messages.ProgressVMJob{Job: j, Task: &running, Lease: lease + 1}); messages.KindOf(r.Err) != messages.KindConflict {
		t.Fatalf("progress without the claim: %v", r.Err)
	}
	p := h.ask(id, messages.ProgressVMJob{Job: j, Task: &running, Lease: lease})
	if p.Err != nil || p.Task.Revision <= view.Task.Revision || p.Task.Progress != 40 {
		t.Fatalf("progress: %+v %v", p.Task, p.Err)
	}
	row, err := h.st.GetTask(ctx, task.ID)
	if err != nil || row.State != messages.TaskRunning || row.AgentTaskID != j.ID || row.Progress != 40 || row.Revision != p.Task.Revision {
		t.Fatalf("task row after progress: %+v %v", row, err)
	}

	pending := *p.Task
	pending.State, pending.Message = messages.TaskPending, "attempt 1 of 3: no node; retrying"
	notBefore := h.st.Now().Add(time.Hour).UTC()
	if r := h.ask(id, messages.RetryVMJob{Job: j, Task: &pending, Lease: lease, Cause: "no node", NotBefore: notBefore}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if held, err := d.Holds(ctx, j.ID); err != nil || held {
		t.Fatalf("claim after retry: held %v, %v", held, err)
	}
	jr, err := h.st.GetJob(ctx, j.ID)
	if err != nil || jr.LastError != "no node" || !jr.NotBefore.Equal(notBefore) {
		t.Fatalf("job after retry: %+v %v", jr, err)
	}
	if row, err := h.st.GetTask(ctx, task.ID); err != nil || row.State != messages.TaskPending || row.Message != pending.Message {
		t.Fatalf("task after retry: %+v %v", row, err)
	}
	// The claim is gone: a second retry is refused and changes nothing.
	if r := h.ask(id, messages.RetryVMJob{Job: j, Task: &pending, Lease: lease, Cause: "again", NotBefore: notBefore}); r.Err == nil {
		t.Fatal("retry without the claim was accepted")
	}

	// The VM's actor still answers for a job whose VM is gone.
	gone := h.ask(messages.NewID(), messages.GetVMJob{TaskID: task.ID})
	if gone.Err != nil || gone.VM != nil || gone.Task == nil || gone.Task.ID != task.ID {
		t.Fatalf("job view of a gone vm: %+v", gone)
	}
	if r := h.ask(id, messages.GetVMJob{TaskID: messages.NewID()}); messages.KindOf(r.Err) != messages.KindNotFound {
		t.Fatalf("job view of a missing task: %+v", r)
	}
}
