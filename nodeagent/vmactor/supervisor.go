package vmactor

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/otherix/otherix/messages"
)

// How the VM actors are supervised.
//
// Only a panic in an actor's own Receive reaches the supervisor: operations
// run off the actor and goRun turns their panics into task errors. Such a
// panic is a bug in the actor's bookkeeping, so:
//   - one for one: VMs are independent, and one VM's bug must not restart
//     the actors of the others (all for one would end every console and
//     queue on the node);
//   - restart: the next incarnation reloads the record and re-adopts QEMU,
//     the path an agent restart takes and its tests cover. QEMU is never
//     touched; the work the crashed incarnation held fails with
//     agent_internal (end), so no task and no caller waits for it forever;
//   - at most maxRestarts within restartWindow, then stop: a panic that the
//     reload itself reproduces would otherwise loop, dialling QMP and
//     logging stacks. The stopped actor is forgotten (forget) and the VM
//     runs on unmanaged until the next task for it spawns a fresh actor, so
//     a retry follows a request, not a hot loop.
//
// protoactor's default (10 restarts within 10 s) was implicit and allows a
// crash loop of one restart a second.
const (
	maxRestarts   = 3
	restartWindow = time.Minute
	// restartWait bounds how long a restart waits for the crashed
	// incarnation's operation, which its cancelled context ends; QEMU's
	// quit and kill waits are the longest steps that ignore it.
	restartWait = 2 * quitTimeout
)

func (m *Manager) supervisor() actor.SupervisorStrategy {
	return actor.NewOneForOneStrategy(maxRestarts, restartWindow, func(reason any) actor.Directive {
		return actor.RestartDirective
	})
}

// forget drops a stopped actor, unless id already has a newer one. Tasks
// of the VM that are not over were still in its mailbox: they fail now,
// rather than stay pending with nobody to run them.
func (m *Manager) forget(id string, pid *actor.PID) {
	m.mu.Lock()
	cur, ok := m.actors[id]
	if !ok || !cur.Equal(pid) {
		m.mu.Unlock()
		return
	}
	delete(m.actors, id)
	delete(m.inflight, id)
	if !m.closed {
		m.cfg.Log.Error("vm actor stopped after repeated crashes; the VM is left as it is until its next task",
			"vm", id, "restarts", maxRestarts, "within", restartWindow)
	}
	var orphans []string
	for tid, e := range m.tasks {
		if e.task.VMID == id && !messages.Terminal(e.task.State) {
			orphans = append(orphans, tid)
		}
	}
	m.mu.Unlock()
	err := taskError(m.stopError(id))
	for _, tid := range orphans {
		m.update(tid, func(t *messages.AgentTask) {
			t.State, t.Error, t.Message = messages.TaskFailed, err, ""
		})
	}
}

// stopError is why the work of an actor that is stopping fails.
func (m *Manager) stopError(id string) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return messages.Errorf(messages.KindUnavailable, "agent_stopping", "the agent is stopping")
	}
	return messages.Errorf(messages.KindInternal, "agent_internal",
		"the agent's actor for vm %s crashed repeatedly and was stopped; the VM is left as it is; retry", id)
}
