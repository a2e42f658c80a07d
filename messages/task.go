package messages

import "time"

// Task states. A task moves pending → running → success|failed|cancelled and
// never leaves a terminal state.
const (
	TaskPending   = "pending"
	TaskRunning   = "running"
	TaskSuccess   = "success"
	TaskFailed    = "failed"
	TaskCancelled = "cancelled"
)

// Task kinds, named <resource>.<verb>.
const (
	TaskVMCreate = "vm.create"
	TaskVMDelete = "vm.delete"
	TaskVMStart  = "vm.start"
	TaskVMStop   = "vm.stop"
)

// Task is the user-visible record of an asynchronous operation.
type Task struct {
	ID          string     `json:"id"`
	Kind        string     `json:"kind"`
	State       string     `json:"state"`
	Target      Target     `json:"target"`
	Owner       string     `json:"owner"`
	Progress    int        `json:"progress"`
	Message     string     `json:"message,omitempty"`
	Error       *TaskError `json:"error,omitempty"`
	JobID       string     `json:"job_id,omitempty"`
	AgentTaskID string     `json:"agent_task_id,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	Revision    int64      `json:"revision"`
}

// TaskError is why a task failed, with a stable code.
type TaskError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Details are the domain error's details when it carried any (the
	// resource an insufficient_capacity names).
	Details map[string]any `json:"details,omitempty"`
}

// Target names the resource a task acts on.
type Target struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// EntityID implements the store's entity contract.
func (t *Task) EntityID() string { return t.ID }

// EntityRevision implements the store's entity contract.
func (t *Task) EntityRevision() int64 { return t.Revision }

// SetEntityRevision implements the store's entity contract.
func (t *Task) SetEntityRevision(r int64) { t.Revision = r }

// Terminal reports whether a task state is final.
func Terminal(state string) bool {
	return state == TaskSuccess || state == TaskFailed || state == TaskCancelled
}

// CanTransition reports whether a task may move from one state to another.
func CanTransition(from, to string) bool {
	switch from {
	case TaskPending:
		return to == TaskRunning || to == TaskPending || Terminal(to)
	case TaskRunning:
		return to == TaskRunning || Terminal(to)
	}
	return false
}

// Job is the dispatcher's record of work behind a task. A job is claimed by one
// dispatcher at a time through a claim key bound to that dispatcher's etcd
// lease, so a dead dispatcher's jobs become claimable when its lease expires.
type Job struct {
	ID          string    `json:"id"`
	TaskID      string    `json:"task_id"`
	Kind        string    `json:"kind"`
	Target      Target    `json:"target"`
	Attempts    int       `json:"attempts"`
	MaxAttempts int       `json:"max_attempts"`
	NotBefore   time.Time `json:"not_before"`
	LastError   string    `json:"last_error,omitempty"`
	// Force and TimeoutSeconds are the request's options, sent to the agent
	// (delete powers a running VM off first; reboot resets at once; a
	// graceful stop or reboot waits TimeoutSeconds, 0 for the agent's default).
	Force          bool      `json:"force,omitempty"`
	TimeoutSeconds int       `json:"timeout_seconds,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	Revision       int64     `json:"-"`
}

// EntityID implements the store's entity contract.
func (j *Job) EntityID() string { return j.ID }

// EntityRevision implements the store's entity contract.
func (j *Job) EntityRevision() int64 { return j.Revision }

// SetEntityRevision implements the store's entity contract.
func (j *Job) SetEntityRevision(r int64) { j.Revision = r }

// DefaultJobAttempts is the attempt budget of a job unless its kind says otherwise.
const DefaultJobAttempts = 5
