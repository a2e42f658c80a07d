// Package server is the control plane's REST API: the gin router, its
// middleware (request ids, access logs, body limits, the error envelope,
// idempotency keys, metrics) and the handlers.
package server

import (
	"context"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// ControlPlane is what the handlers need of the actor system. The real one is
// *gateway.Gateway; handlers never see actors, PIDs or futures.
type ControlPlane interface {
	// Ready reports whether etcd answers and the actor system has started.
	Ready(ctx context.Context) error

	CreateVM(ctx context.Context, owner string, req messages.CreateVMRequest) (*messages.VM, *messages.Task, error)
	// GetVM resolves ref as an id or, failing that, as a name of owner's.
	GetVM(ctx context.Context, owner, ref string) (*messages.VM, error)
	ListVMs(ctx context.Context, owner string, page store.Page) ([]*messages.VM, string, error)
	UpdateVM(ctx context.Context, owner, ref string, req messages.UpdateVMRequest) (*messages.VM, error)
	// VMTask starts vm.start, vm.stop or vm.delete.
	VMTask(ctx context.Context, owner, ref, kind string, force bool) (*messages.VM, *messages.Task, error)

	GetTask(ctx context.Context, owner, id string) (*messages.Task, error)
	// WaitTask returns once the task is terminal or ctx ends.
	WaitTask(ctx context.Context, owner, id string) (*messages.Task, error)
	ListTasks(ctx context.Context, owner string, page store.Page) ([]*messages.Task, string, error)
	CancelTask(ctx context.Context, owner, id string) (*messages.Task, error)

	// The control plane keeps Idempotency-Key records in its store.
	IdempotencyStore
}

// IdempotencyStore remembers answers to writes sent with an Idempotency-Key.
type IdempotencyStore interface {
	ReserveIdempotency(ctx context.Context, scope, key, requestHash string, stale time.Duration) (*store.IdempotencyRecord, bool, error)
	// ReplaceIdempotency reserves a key whose record expired, if that record
	// is still unchanged; otherwise it returns the record now there.
	ReplaceIdempotency(ctx context.Context, scope, key, requestHash string, expired *store.IdempotencyRecord) (*store.IdempotencyRecord, bool, error)
	CompleteIdempotency(ctx context.Context, scope, key string, rec store.IdempotencyRecord) error
	ReleaseIdempotency(ctx context.Context, scope, key string) error
}
