// Package store is the typed store over the embedded etcd member: the key
// schema, compare-and-set transactions with uniqueness guards and index keys,
// paginated lists, chunked sweeps, the job queue and the settings document.
package store

import "strings"

// Root prefixes every key Otherix writes.
const Root = "/otherix/"

// Resource names used in keys. Rows live at Root+resource+"/"+id.
const (
	VMs         = "vms"
	Tasks       = "tasks"
	Jobs        = "jobs"
	claims      = "claims"
	idempotency = "idempotency"
	settingsKey = Root + "settings"
	// Allocations holds one document per node name,
	// /otherix/allocations/<node>: the vCPUs, memory and disk the VMs
	// placed on the node ask for and their ids (allocations.go).
	Allocations = "allocations"
	// allocationsMigrated marks a store whose allocation documents were
	// built from the VM rows (MigrateAllocations).
	allocationsMigrated = Root + "migrations/allocations"
)

// RowKey is where a resource's JSON row lives.
func RowKey(resource, id string) string { return Root + resource + "/" + id }

// RowPrefix ranges over every row of a resource.
func RowPrefix(resource string) string { return Root + resource + "/" }

// UniqKey guards a unique value; its value is the id that owns it.
func UniqKey(resource, field, value string) string {
	return Root + "uniq/" + resource + "/" + field + "/" + value
}

// IndexKey orders ids of a resource under a sort key for paginated lists.
func IndexKey(resource, sortKey, id string) string {
	return IndexPrefix(resource, sortKey) + id
}

// IndexPrefix ranges over one sort key of a resource's index.
func IndexPrefix(resource, sortKey string) string {
	return Root + "index/" + resource + "/" + sortKey + "/"
}

func claimKey(jobID string) string { return Root + claims + "/" + jobID }

// prefixEnd is the first key after every key that starts with prefix.
func prefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00"
}

func lastSegment(key string) string { return key[strings.LastIndexByte(key, '/')+1:] }

// ClaimPrefix ranges over the job claim keys (one per claimed job, bound to
// its dispatcher's lease).
func ClaimPrefix() string { return RowPrefix(claims) }
