package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Remove takes the member id out of the cluster (etcd's MemberRemove).
// A learner, started or not, always goes: it holds no vote. A voter goes
// only if the voters left would still hold a quorum of healthy members
// (as Members sees them now), unless force; removing the only voter is
// refused whatever force says (ErrLastVoter). A removed member that is
// still running stops by itself: it applies its own removal, or its peers
// refuse it as removed (Stopped, StopCause).
func (m *Member) Remove(ctx context.Context, id uint64, force bool) error {
	members, err := m.Members(ctx)
	if err != nil {
		return err
	}
	if err := removalCheck(members, id, force); err != nil {
		return err
	}
	// etcd refuses a change for a few seconds after the last one, until
	// this member has been connected to a quorum for its health interval
	// (ErrUnhealthy): retried as AddLearner does, for a bounded time, since
	// a forced removal may meet a cluster that stays short of quorum.
	rctx, cancel := context.WithTimeout(ctx, removeRetryFor)
	defer cancel()
	for wait := addRetryMin; ; wait = min(2*wait, addRetryMax) {
		_, err = m.client.MemberRemove(rctx, id)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, rpctypes.ErrMemberNotFound) || errors.Is(err, rpctypes.ErrGRPCMemberNotFound):
			// Another replica removed it meanwhile.
			return fmt.Errorf("%w: %x", ErrMemberNotFound, id)
		case id == m.ID() && m.server.Server.IsIDRemoved(id):
			// This member removed itself: the change committed, and the
			// answer was lost as the member began to stop.
			return nil
		case !errors.Is(err, rpctypes.ErrUnhealthy) && !errors.Is(err, rpctypes.ErrGRPCUnhealthy):
			return fmt.Errorf("etcd: remove member %x: %w", id, err)
		}
		select {
		case <-rctx.Done():
			return fmt.Errorf("etcd: remove member %x: %w", id, err)
		case <-time.After(wait):
		}
	}
}

// removeRetryFor bounds Remove's retries while etcd calls the cluster
// unhealthy for a change: three of its 5-second health intervals.
const removeRetryFor = 15 * time.Second

// removalCheck applies Remove's rules to a membership as Members lists it.
func removalCheck(members []MemberInfo, id uint64, force bool) error {
	var target *MemberInfo
	voters, healthyOthers := 0, 0
	for i := range members {
		mi := &members[i]
		if mi.ID == id {
			target = mi
		}
		if mi.Role != RoleVoter {
			continue
		}
		voters++
		if mi.ID != id && mi.Healthy {
			healthyOthers++
		}
	}
	switch {
	case target == nil:
		return fmt.Errorf("%w: %x", ErrMemberNotFound, id)
	case target.Role != RoleVoter:
		return nil
	case voters == 1:
		return fmt.Errorf("%w (%s)", ErrLastVoter, target.Name)
	}
	after := voters - 1
	if need := after/2 + 1; healthyOthers < need && !force {
		return &QuorumError{Voters: after, Healthy: healthyOthers, Needed: need}
	}
	return nil
}

// DefaultStaleLearnerAfter is how long a learner may stay without a name
// (added by a join whose joiner never started its member) before the
// promoter removes it. A joiner starts its member seconds after the add,
// and the name is published as soon as it reaches the leader; ten minutes
// leaves room for a slow first start without keeping a dead join forever.
const DefaultStaleLearnerAfter = 10 * time.Minute

// RemoveStaleLearners removes the learners that have had no name (never
// started) for at least after, as first seen by this process: the clock
// starts when this member first lists them, so a restart or a new
// promoter only delays the removal. It returns the ids removed. A learner
// another replica removed first counts as removed.
func (m *Member) RemoveStaleLearners(ctx context.Context, after time.Duration, now time.Time) ([]uint64, error) {
	m.promoteMu.Lock()
	defer m.promoteMu.Unlock()
	if m.IsLearner() {
		return nil, nil
	}
	resp, err := m.client.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("etcd: list members: %w", err)
	}
	if m.unnamedSince == nil {
		m.unnamedSince = map[uint64]time.Time{}
	}
	still := map[uint64]bool{}
	var removed []uint64
	var errs []error
	for _, mb := range resp.Members {
		if !mb.IsLearner || mb.Name != "" {
			continue
		}
		still[mb.ID] = true
		seen, ok := m.unnamedSince[mb.ID]
		if !ok {
			m.unnamedSince[mb.ID] = now
			continue
		}
		if now.Sub(seen) < after {
			continue
		}
		_, err := m.client.MemberRemove(ctx, mb.ID)
		if err != nil && !errors.Is(err, rpctypes.ErrMemberNotFound) && !errors.Is(err, rpctypes.ErrGRPCMemberNotFound) {
			errs = append(errs, fmt.Errorf("etcd: remove stale learner %x at %s: %w", mb.ID, strings.Join(mb.PeerURLs, ","), err))
			continue
		}
		removed = append(removed, mb.ID)
		delete(still, mb.ID)
	}
	for id := range m.unnamedSince {
		if !still[id] {
			delete(m.unnamedSince, id)
		}
	}
	return removed, errors.Join(errs...)
}

// Stopped is closed once the etcd server has stopped, by Close or by
// itself (its removal from the cluster, a fatal error). StopCause says why.
func (m *Member) Stopped() <-chan struct{} { return m.server.Server.StopNotify() }

// StopCause explains a stop the caller did not ask for: ErrRemoved when
// this member was removed from the cluster (it applied its own removal, or
// a peer that answers no longer lists it), else a generic error.
func (m *Member) StopCause(ctx context.Context) error {
	self := m.ID()
	if m.server.Server.IsIDRemoved(self) {
		return fmt.Errorf("%w (member %x of cluster %x)", ErrRemoved, self, m.ClusterID())
	}
	// A member removed while it was down learns it from its peers, which
	// refuse it; their membership says so. The local copy of the
	// membership is still readable after the stop.
	if m.peerHTTP != nil {
		for _, mb := range m.server.Server.Cluster().Members() {
			if uint64(mb.ID) == self || len(mb.PeerURLs) == 0 {
				continue
			}
			if listed, answered := m.peerLists(ctx, mb.PeerURLs[0], self); answered && !listed {
				return fmt.Errorf("%w (member %x of cluster %x; %s no longer lists it)", ErrRemoved, self, m.ClusterID(), mb.Name)
			}
		}
	}
	return errors.New("etcd: the member stopped")
}
