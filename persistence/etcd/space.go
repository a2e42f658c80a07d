package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Status is the member's space accounting and alarms, as the storage
// maintenance loop and the metrics read them.
type Status struct {
	// DBSize is the backend file's size. etcd compares it (not the space in
	// use) with the quota before each write, so a fragmented file can refuse
	// writes with most of its pages free.
	DBSize int64
	// DBSizeInUse is the space the live data and retained history occupy;
	// DBSize - DBSizeInUse is what a defragmentation gives back.
	DBSizeInUse int64
	// Quota is the backend quota (etcd.quota_bytes).
	Quota int64
	// Revision is the store's current revision.
	Revision int64
	// NoSpace is set while the space alarm is raised on any member: writes
	// are refused cluster-wide until it is disarmed.
	NoSpace bool
	// Corrupt is set while a corruption alarm is raised.
	Corrupt bool
	// Defrags and DefragErrors count this member's defragmentations since
	// it started, and LastDefrag is how long the latest one took.
	Defrags      uint64
	DefragErrors uint64
	LastDefrag   time.Duration
}

// Free is what a defragmentation would give back.
func (s Status) Free() int64 {
	if s.DBSize > s.DBSizeInUse {
		return s.DBSize - s.DBSizeInUse
	}
	return 0
}

// Status reads the member's sizes and the cluster's alarms.
func (m *Member) Status(ctx context.Context) (Status, error) {
	// The in-process maintenance client ignores the endpoint: it always
	// reaches this member.
	sr, err := m.client.Status(ctx, "")
	if err != nil {
		return Status{}, fmt.Errorf("etcd: status: %w", err)
	}
	ar, err := m.client.AlarmList(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("etcd: alarm list: %w", err)
	}
	s := Status{DBSize: sr.DbSize, DBSizeInUse: sr.DbSizeInUse, Quota: sr.DbSizeQuota, Revision: sr.Header.GetRevision()}
	if s.Quota == 0 {
		s.Quota = m.cfg.QuotaBytes
	}
	for _, a := range ar.Alarms {
		switch a.Alarm {
		case pb.AlarmType_NOSPACE:
			s.NoSpace = true
		case pb.AlarmType_CORRUPT:
			s.Corrupt = true
		}
	}
	m.mu.Lock()
	s.Defrags, s.DefragErrors, s.LastDefrag = m.defrags, m.defragErrors, m.lastDefrag
	m.mu.Unlock()
	return s, nil
}

// CompactAll compacts the history up to the current revision, physically,
// so the space of every superseded and deleted revision can be reused. It
// drops the history watches and long polls resume from; the storage loop
// uses it only to recover from the space alarm, when writes are refused
// anyway. It returns the revision compacted to.
func (m *Member) CompactAll(ctx context.Context) (int64, error) {
	resp, err := m.client.Get(ctx, "/", clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("etcd: read revision: %w", err)
	}
	rev := resp.Header.Revision
	if _, err := m.client.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return 0, fmt.Errorf("etcd: compact to %d: %w", rev, err)
	}
	return rev, nil
}

// Defragment rewrites this member's backend file without its free pages.
// The member answers nothing while it runs, for a time that grows with the
// data in use (seconds for 130 MiB on a busy machine, BENCHMARKS.md), so the
// storage loop calls it only when it is worth it.
func (m *Member) Defragment(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	start := time.Now()
	// The server directly, not the in-process client: v3client's
	// maintenance server has no health notifier and dereferences it in
	// Defragment. The call cannot be cancelled once started.
	err := m.server.Server.Defragment()
	m.mu.Lock()
	if err != nil {
		m.defragErrors++
	} else {
		m.defrags++
		m.lastDefrag = time.Since(start)
	}
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("etcd: defragment: %w", err)
	}
	return nil
}

// DisarmNoSpace clears the space alarm of every member that raised it, so
// writes are taken again. A member still over its quota raises it again on
// its next write.
func (m *Member) DisarmNoSpace(ctx context.Context) error {
	ar, err := m.client.AlarmList(ctx)
	if err != nil {
		return fmt.Errorf("etcd: alarm list: %w", err)
	}
	for _, a := range ar.Alarms {
		if a.Alarm != pb.AlarmType_NOSPACE {
			continue
		}
		if _, err := m.client.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: a.MemberID, Alarm: a.Alarm}); err != nil {
			return fmt.Errorf("etcd: disarm space alarm of member %x: %w", a.MemberID, err)
		}
	}
	return nil
}
