package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/otherix/otherix/persistence/etcd"
)

// Space is the store's space management; persistence/etcd.Member is one.
type Space interface {
	Status(ctx context.Context) (etcd.Status, error)
	CompactAll(ctx context.Context) (int64, error)
	Defragment(ctx context.Context) error
	DisarmNoSpace(ctx context.Context) error
}

var _ Space = (*etcd.Member)(nil)

// StoragePolicy says when a defragmentation is worth its pause and when a
// full store has room enough to take writes again.
type StoragePolicy struct {
	// MinFreeBytes is the least free space (file size minus space in use)
	// worth a defragmentation (default 16 MiB).
	MinFreeBytes int64
	// MinFreeRatio defragments once that share of the file is free
	// (default 0.25) ...
	MinFreeRatio float64
	// HighWater ... or once the file reaches that share of the quota
	// (default 0.8), because etcd checks the file size, free pages
	// included, against the quota before each write.
	HighWater float64
	// DisarmBelow is the share of the quota the space in use must be under
	// before the space alarm is disarmed (default 0.9): disarming with less
	// margin would let the next few writes raise it again.
	DisarmBelow float64
}

// DefaultStoragePolicy is the production policy.
func DefaultStoragePolicy() StoragePolicy {
	return StoragePolicy{MinFreeBytes: 16 << 20, MinFreeRatio: 0.25, HighWater: 0.8, DisarmBelow: 0.9}
}

func (p StoragePolicy) withDefaults() StoragePolicy {
	d := DefaultStoragePolicy()
	if p.MinFreeBytes <= 0 {
		p.MinFreeBytes = d.MinFreeBytes
	}
	if p.MinFreeRatio <= 0 {
		p.MinFreeRatio = d.MinFreeRatio
	}
	if p.HighWater <= 0 {
		p.HighWater = d.HighWater
	}
	if p.DisarmBelow <= 0 {
		p.DisarmBelow = d.DisarmBelow
	}
	return p
}

// worthDefrag reports whether s has enough free pages to be worth a pause.
func (p StoragePolicy) worthDefrag(s etcd.Status) bool {
	free := s.Free()
	if free < p.MinFreeBytes {
		return false
	}
	return float64(free) >= p.MinFreeRatio*float64(s.DBSize) ||
		(s.Quota > 0 && float64(s.DBSize) >= p.HighWater*float64(s.Quota))
}

// roomToDisarm reports whether a store whose alarm is raised can take
// writes again: the live data is under the disarm mark, and the file (what
// etcd checks) is under the quota.
func (p StoragePolicy) roomToDisarm(s etcd.Status) bool {
	return float64(s.DBSizeInUse) < p.DisarmBelow*float64(s.Quota) && s.DBSize < s.Quota
}

// ErrStillFull is returned by the storage loop while the live data keeps the
// store over its quota: only an operator can help (docs/operations.md).
var ErrStillFull = errors.New("maintenance: store still full after freeing space")

// Storage keeps the store under its quota. Every run it reads the member's
// sizes and alarms. While the space alarm is raised it frees what it can:
// sweeps first (expired audit entries, finished tasks, expired sessions and
// join tokens, stale idempotency records: deletes, which etcd still takes),
// then compacts the whole history, defragments when that frees enough or
// makes room, and disarms the alarm once the space in use is under the
// policy's mark. Otherwise it defragments when
// the free pages are worth it. Defragmentation is per member, so every
// replica runs this loop for its own member; compaction and the alarm are
// cluster-wide and idempotent.
func Storage(sp Space, sweeps func(context.Context) error, p StoragePolicy, log *slog.Logger) func(context.Context) error {
	p = p.withDefaults()
	return func(ctx context.Context) error {
		s, err := sp.Status(ctx)
		if err != nil {
			return err
		}
		if s.NoSpace {
			return recoverSpace(ctx, sp, sweeps, p, s, log)
		}
		if !p.worthDefrag(s) {
			return nil
		}
		if err := sp.Defragment(ctx); err != nil {
			return err
		}
		after, err := sp.Status(ctx)
		if err != nil {
			return err
		}
		log.Info("store defragmented", "db_size_before", s.DBSize, "db_size_after", after.DBSize,
			"db_size_in_use", after.DBSizeInUse, "took", after.LastDefrag)
		return nil
	}
}

func recoverSpace(ctx context.Context, sp Space, sweeps func(context.Context) error, p StoragePolicy, s etcd.Status, log *slog.Logger) error {
	log.Warn("store full: writes are refused; freeing space", "db_size", s.DBSize, "db_size_in_use", s.DBSizeInUse, "quota", s.Quota)
	var sweepErr error
	if sweeps != nil {
		// A sweep that fails (one of its rows wanted a put) must not keep
		// the others, and the compaction after them, from running.
		sweepErr = sweeps(ctx)
	}
	rev, err := sp.CompactAll(ctx)
	if err != nil {
		return errors.Join(sweepErr, err)
	}
	after, err := sp.Status(ctx)
	if err != nil {
		return errors.Join(sweepErr, err)
	}
	// Defragment only when it frees enough to matter or lets the alarm be
	// disarmed: a store stuck full with live data would otherwise pause its
	// member for a whole-file rewrite at every run, for nothing.
	if after.Free() >= p.MinFreeBytes || float64(after.DBSizeInUse) < p.DisarmBelow*float64(after.Quota) {
		if err := sp.Defragment(ctx); err != nil {
			return errors.Join(sweepErr, err)
		}
		if after, err = sp.Status(ctx); err != nil {
			return errors.Join(sweepErr, err)
		}
	}
	if !p.roomToDisarm(after) {
		return errors.Join(sweepErr, fmt.Errorf("%w: %d bytes in use, %d on disk, quota %d: raise etcd.quota_bytes and restart",
			ErrStillFull, after.DBSizeInUse, after.DBSize, after.Quota))
	}
	if err := sp.DisarmNoSpace(ctx); err != nil {
		return errors.Join(sweepErr, err)
	}
	log.Warn("store space recovered: space alarm disarmed, writes are taken again", "compacted_to", rev,
		"db_size_before", s.DBSize, "db_size_after", after.DBSize, "db_size_in_use", after.DBSizeInUse, "quota", after.Quota)
	if sweepErr != nil {
		log.Warn("store space recovered, but a sweep failed", "err", sweepErr)
	}
	return nil
}
