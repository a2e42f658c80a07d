package messages

// AnonymousOwner owns everything created before identity and access control
// exist; every VM belongs to a user once they do.
const AnonymousOwner = "anonymous"

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
	}
	// GetVM asks for the VM's current state.
	GetVM struct{}
	// UpdateVM changes the spec and bumps the generation.
	UpdateVM struct {
		Patch    VMSpecPatch
		Revision int64
	}
	// RequestVMTask starts an asynchronous operation (vm.start, vm.stop,
	// vm.delete) on the VM.
	RequestVMTask struct {
		Kind  string
		Force bool
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
)

// VMReply answers a VM actor command.
type VMReply struct {
	VM   *VM
	Task *Task
	Err  error
}
