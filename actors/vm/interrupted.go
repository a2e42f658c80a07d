package vm

import (
	"time"

	"github.com/otherix/otherix/messages"
)

// noteInterruption keeps the VM's Interrupted condition in step with its
// status after an observation (reason is what the node reported) or a
// finished operation (reason empty).
//
// A guest that powered itself off is stopped as if the user had asked:
// spec.power_state becomes stopped, as OpenStack's power-state sync marks
// such an instance SHUTOFF. The guest is the user's, so its power-off is
// the user's intent, and nothing may start it again behind their back.
// A panic or a QEMU that died is not anybody's intent: the power state the
// user asked for stays, the condition says why the VM is not there, and
// nothing restarts it automatically today (otherix vm start does).
func noteInterruption(vm *messages.VM, reason string, now time.Time) {
	prev := messages.FindCondition(vm.Status.Conditions, messages.VMConditionInterrupted)
	if c, ok := messages.VMInterruptedCondition(vm.Status.Phase, reason, vm.Status.Message, prev, now); ok {
		vm.Status.Conditions = messages.SetCondition(vm.Status.Conditions, c)
	}
	if reason == messages.ReasonGuestShutdown && vm.Spec.PowerState == messages.PowerRunning {
		vm.Spec.PowerState = messages.PowerStopped
		vm.Generation++
	}
}
