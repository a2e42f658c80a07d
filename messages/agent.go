package messages

import "time"

// The agent's own API (api/openapi/agent.yaml), served by otherix-agent over
// mutual TLS to the control plane only. Everything that changes a VM on a node
// is an agent task keyed by the control plane's job id, so a job that is
// delivered again finds the task it already started instead of repeating it.

// Agent task kinds: the VM task kinds plus the ones only an agent runs.
const (
	TaskVMPoweroff = "vm.poweroff"
	TaskVMReboot   = "vm.reboot"
)

// PhaseUnknown is a VM whose node stopped reporting: nothing is known of it
// and nothing is done to it until the node returns.
const PhaseUnknown = "unknown"

// AgentVM is what an agent needs to know of a VM: identity, generation and the
// spec it should realise.
type AgentVM struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
	Spec       VMSpec `json:"spec"`
	// NICs are the VM's allocated NICs (IPAM ran at create): the agent
	// makes a tap per NIC and writes their addresses into the seed.
	NICs []NICStatus `json:"nics,omitempty"`
}

// AgentTaskRequest is the body of POST /v1/tasks on an agent.
type AgentTaskRequest struct {
	// ID is the control plane's job id: the idempotency key of the task.
	ID   string  `json:"id"`
	Kind string  `json:"kind"`
	VM   AgentVM `json:"vm"`
	// TimeoutSeconds bounds a graceful stop or reboot (how long the guest
	// gets to power off after the ACPI button); 0 means the agent's default.
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
	// Force: delete powers off a running VM first; reboot resets it at once.
	Force bool `json:"force,omitempty"`
}

// AgentTask is one task on an agent, as GET /v1/tasks/{id} reports it.
type AgentTask struct {
	ID         string      `json:"id"`
	Kind       string      `json:"kind"`
	VMID       string      `json:"vm_id"`
	State      string      `json:"state"`
	Progress   int         `json:"progress"`
	Message    string      `json:"message,omitempty"`
	Error      *TaskError  `json:"error,omitempty"`
	VM         *VMObserved `json:"vm,omitempty"` // the VM as the task left it
	CreatedAt  time.Time   `json:"created_at"`
	UpdatedAt  time.Time   `json:"updated_at"`
	FinishedAt *time.Time  `json:"finished_at,omitempty"`
}

// AgentVMList answers GET /v1/vms on an agent.
type AgentVMList struct {
	Items []VMObserved `json:"items"`
}
