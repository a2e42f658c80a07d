package messages

// FeatureDryRun is listed in VersionInfo.Features by a control plane whose
// create, update and delete endpoints take ?dry_run=true. A client checks
// it before a dry run: an older control plane ignores the parameter and
// would carry the write out.
const FeatureDryRun = "dry_run"

// Dry-run actions.
const (
	DryRunCreate = "create"
	DryRunUpdate = "update"
	DryRunDelete = "delete"
	DryRunStart  = "start"
	DryRunStop   = "stop"
)

// DryRunResult answers a write sent with ?dry_run=true (200): the request
// passed every check the write makes (validation, authorization, quota,
// capacity, name and address conflicts, revisions) and would do Action to
// the resource shown, as it would be; nothing was written. A request that
// would fail answers the error the write would.
type DryRunResult struct {
	// DryRun is always true.
	DryRun bool   `json:"dry_run"`
	Action string `json:"action"`
	// VM is the VM as the write would leave it (for a delete, as it is).
	VM *VM `json:"vm,omitempty"`
	// Network is the network as the write would leave it (for a delete,
	// as it is).
	Network *Network `json:"network,omitempty"`
}
