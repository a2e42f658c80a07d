package messages

import "time"

// CreateVMRequest is the body of POST /v1/vms.
type CreateVMRequest struct {
	Name string `json:"name"`
	Spec VMSpec `json:"spec"`
}

// VMSpecPatch changes part of a VM's spec (PATCH /v1/vms/{id}); nil fields are
// left as they are.
type VMSpecPatch struct {
	CPUs      *int    `json:"cpus,omitempty"`
	MemoryMiB *int    `json:"memory_mib,omitempty"`
	DiskGiB   *int    `json:"disk_gib,omitempty"`
	UserData  *string `json:"user_data,omitempty"`
}

// UpdateVMRequest is the body of PATCH /v1/vms/{id}. Revision, when set, must
// match the VM's current revision or the update is refused as stale.
type UpdateVMRequest struct {
	Spec     VMSpecPatch `json:"spec"`
	Revision int64       `json:"revision,omitempty"`
}

// VM actor commands. Each is answered with a VMReply.
type (
	// CreateVM asks a (new) VM actor to create its VM with a vm.create task.
	CreateVM struct {
		Owner string
		Name  string
		Spec  VMSpec
		// DryRun checks everything the create would (placement, quota,
		// the name, addresses) and answers the VM it would create, writing
		// nothing.
		DryRun bool
	}
	// GetVM asks for the VM's current state.
	GetVM struct{}
	// UpdateVM changes the spec and bumps the generation.
	UpdateVM struct {
		Patch    VMSpecPatch
		Revision int64
		// DryRun checks and answers the VM as it would be, writing nothing.
		DryRun bool
	}
	// RequestVMTask starts an asynchronous operation (vm.start, vm.stop,
	// vm.poweroff, vm.reboot, vm.delete) on the VM. Force and TimeoutSeconds
	// travel with the job to the agent (see AgentTaskRequest).
	RequestVMTask struct {
		Kind           string
		Force          bool
		TimeoutSeconds int
		// DryRun checks the operation may start and answers the VM as it
		// would be, with no task or job written.
		DryRun bool
	}
	// CancelVMTask cancels the VM's pending task.
	CancelVMTask struct{ TaskID string }
	// FinishVMJob ends the VM's running job: the task is written terminal and,
	// in the same transaction, the VM row is updated (or deleted when Delete).
	// Lease is the dispatcher's etcd lease that must still hold the job.
	FinishVMJob struct {
		Job    *Job
		Task   *Task
		Lease  int64
		Status *VMStatus
		Power  string
		Delete bool
	}
	// GetVMJob asks for what an attempt of the VM's job starts from: the VM
	// (nil when it no longer exists, which is not an error here) and the
	// job's task TaskID, both as the VM's actor, their one writer, has them.
	GetVMJob struct{ TaskID string }
	// ProgressVMJob writes a running job's progress (agent task id,
	// progress, message; state running) into its task, refused unless the
	// dispatcher's lease Lease still holds the job. The reply's Task is the
	// task as written.
	ProgressVMJob struct {
		Job   *Job
		Task  *Task
		Lease int64
	}
	// RetryVMJob releases the job after an attempt that could not finish:
	// the job records Cause and waits until NotBefore, its claim is dropped,
	// and its task (pending again, saying why) is written with it, in one
	// transaction guarded by the dispatcher's lease Lease.
	RetryVMJob struct {
		Job       *Job
		Task      *Task
		Lease     int64
		Cause     string
		NotBefore time.Time
	}
	// PlaceVM records the node a job placed the VM on, before any agent is
	// asked to create it, so a crash never leaves a VM on a node the control
	// plane does not know. It is refused unless the VM's active task is
	// TaskID and the dispatcher's lease Lease still holds job JobID.
	PlaceVM struct {
		JobID  string
		TaskID string
		Lease  int64
		Node   string
	}
	// ObserveVM merges what node Node last observed of the VM (from a
	// heartbeat). It is applied only while the VM is placed on Node, has no
	// task in progress, and the observation is newer than the status. It
	// may be sent without a sender; the reply then goes nowhere.
	ObserveVM struct {
		Node     string
		Observed VMObserved
	}
	// MarkVMUnknown sets the phase of a VM placed on Node to unknown, with
	// Message, because the node stopped reporting. Nothing is deleted; the
	// node's next heartbeat heals the VM with an ObserveVM.
	MarkVMUnknown struct {
		Node    string
		Message string
	}
)

// VMReply answers a VM actor command.
type VMReply struct {
	VM   *VM
	Task *Task
	Err  error
}
