package messages

import "fmt"

// Quota is what an admin lets one user's VMs use in total. A nil limit is no
// limit; 0 allows none. A user without a quota document has no limits.
type Quota struct {
	VMs       *int64 `json:"vms,omitempty"`
	CPUs      *int64 `json:"cpus,omitempty"`
	MemoryMiB *int64 `json:"memory_mib,omitempty"`
	DiskGiB   *int64 `json:"disk_gib,omitempty"`
}

// Usage is what one user's VMs ask for: every VM counts, running or not,
// from its create until its delete commits (a stopped VM keeps its disk and
// may start again at any time).
type Usage struct {
	VMs       int64 `json:"vms"`
	CPUs      int64 `json:"cpus"`
	MemoryMiB int64 `json:"memory_mib"`
	DiskGiB   int64 `json:"disk_gib"`
}

// UsageOf is what one VM spec adds to its owner's usage.
func UsageOf(s VMSpec) Usage {
	return Usage{VMs: 1, CPUs: int64(s.CPUs), MemoryMiB: int64(s.MemoryMiB), DiskGiB: int64(s.DiskGiB)}
}

// Add returns u plus d (d may be negative: a release).
func (u Usage) Add(d Usage) Usage {
	return Usage{VMs: u.VMs + d.VMs, CPUs: u.CPUs + d.CPUs, MemoryMiB: u.MemoryMiB + d.MemoryMiB, DiskGiB: u.DiskGiB + d.DiskGiB}
}

// Sub returns u minus d.
func (u Usage) Sub(d Usage) Usage {
	return u.Add(Usage{VMs: -d.VMs, CPUs: -d.CPUs, MemoryMiB: -d.MemoryMiB, DiskGiB: -d.DiskGiB})
}

// QuotaView answers GET and PUT /v1/users/{id}/quota: the limits and what the
// user's VMs use now.
type QuotaView struct {
	User  string `json:"user"`
	Quota Quota  `json:"quota"`
	Usage Usage  `json:"usage"`
}

// CodeQuotaExceeded refuses a create or a resize that would take its owner
// over a quota (HTTP 422); details name the resource, its limit, the usage
// and what was asked.
const CodeQuotaExceeded = "quota_exceeded"

// MaxQuota bounds a quota value, so sums never overflow.
const MaxQuota = 1 << 40

// Validate checks every limit is between 0 and MaxQuota.
func (q *Quota) Validate() error {
	for _, f := range []struct {
		name string
		v    *int64
	}{{"vms", q.VMs}, {"cpus", q.CPUs}, {"memory_mib", q.MemoryMiB}, {"disk_gib", q.DiskGiB}} {
		if f.v != nil && (*f.v < 0 || *f.v > MaxQuota) {
			return Invalid(f.name, "must be between 0 and %d", int64(MaxQuota))
		}
	}
	return nil
}

// Admit checks that usage after adding delta stays within q. Only resources
// the delta grows are checked: a user over a lowered quota may still shrink
// or delete. The refusal names the first resource over its limit.
func (q *Quota) Admit(usage, delta Usage) error {
	if q == nil {
		return nil
	}
	next := usage.Add(delta)
	for _, c := range []struct {
		name        string
		limit       *int64
		has, d, nxt int64
	}{
		{"vms", q.VMs, usage.VMs, delta.VMs, next.VMs},
		{"cpus", q.CPUs, usage.CPUs, delta.CPUs, next.CPUs},
		{"memory_mib", q.MemoryMiB, usage.MemoryMiB, delta.MemoryMiB, next.MemoryMiB},
		{"disk_gib", q.DiskGiB, usage.DiskGiB, delta.DiskGiB, next.DiskGiB},
	} {
		if c.limit == nil || c.d <= 0 || c.nxt <= *c.limit {
			continue
		}
		return Errorf(KindUnprocessable, CodeQuotaExceeded,
			"quota exceeded: %s would be %d, the limit is %d (%d in use, %d asked)", c.name, c.nxt, *c.limit, c.has, c.d).
			WithDetail("resource", c.name).WithDetail("limit", *c.limit).WithDetail("used", c.has).WithDetail("requested", c.d)
	}
	return nil
}

// String is the quota as the CLI shows it.
func (q Quota) String() string {
	f := func(v *int64, unit string) string {
		if v == nil {
			return "unlimited"
		}
		return fmt.Sprintf("%d%s", *v, unit)
	}
	return fmt.Sprintf("vms %s, cpus %s, memory %s, disk %s", f(q.VMs, ""), f(q.CPUs, ""), f(q.MemoryMiB, " MiB"), f(q.DiskGiB, " GiB"))
}
