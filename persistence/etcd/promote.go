package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// promotionTarget is how many voters the cluster should have: every
// started member, less one when that count is even. Three voters survive
// one failure and so do four, but four need three to answer; so a fourth
// replica waits as a learner (it still replicates everything) until a
// fifth arrives. It never asks to demote.
func promotionTarget(voters, learners int) int {
	t := voters + learners
	if t%2 == 0 {
		t--
	}
	return max(t, voters)
}

// PromoteOne promotes at most one learner when the policy asks for another
// voter, trying the started learners in name order. It returns the name
// promoted, "" when there is nothing to do, or ErrLearnerNotReady when
// every candidate is still catching up.
//
// Promotions from this process are serialised; across replicas etcd applies
// one membership change at a time, and a second promotion that raced finds
// its learner already a voter (ErrMemberNotLearner) and is treated as done.
// A learner does not promote anyone.
func (m *Member) PromoteOne(ctx context.Context) (string, error) {
	m.promoteMu.Lock()
	defer m.promoteMu.Unlock()
	if m.IsLearner() {
		return "", nil
	}
	resp, err := m.client.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("etcd: list members: %w", err)
	}
	voters, learners := countRoles(resp.Members)
	if voters >= promotionTarget(voters, learners) {
		return "", nil
	}
	var cands []struct {
		id   uint64
		name string
	}
	for _, mb := range resp.Members {
		if mb.IsLearner && mb.Name != "" {
			cands = append(cands, struct {
				id   uint64
				name string
			}{mb.ID, mb.Name})
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].name < cands[j].name })
	var notReady []string
	for _, c := range cands {
		_, err := m.client.MemberPromote(ctx, c.id)
		switch {
		case err == nil:
			return c.name, nil
		case isLearnerNotReady(err):
			notReady = append(notReady, c.name)
		case errors.Is(err, rpctypes.ErrMemberNotLearner):
			return "", nil
		default:
			return "", fmt.Errorf("etcd: promote %s: %w", c.name, err)
		}
	}
	return "", fmt.Errorf("%w: %s", ErrLearnerNotReady, strings.Join(notReady, ", "))
}

// isLearnerNotReady matches etcd's refusal to promote a learner that lags
// the leader, whether it came from this member or was forwarded to the
// leader over the peer API.
func isLearnerNotReady(err error) bool {
	return errors.Is(err, rpctypes.ErrMemberLearnerNotReady) || errors.Is(err, rpctypes.ErrGRPCLearnerNotReady) ||
		strings.Contains(err.Error(), "in sync with leader")
}

// PromoterOptions tune RunPromoter. Zero values take the defaults.
type PromoterOptions struct {
	// Interval between membership checks when nothing is pending (5s).
	Interval time.Duration
	// MinBackoff and MaxBackoff bound the retry delay while a learner
	// catches up or a promotion fails (200ms, 10s).
	MinBackoff, MaxBackoff time.Duration
	// StaleLearnerAfter is how long a learner without a name (a join whose
	// joiner never started) is left before it is removed
	// (DefaultStaleLearnerAfter).
	StaleLearnerAfter time.Duration
	// Now is the clock of the stale-learner sweep (time.Now).
	Now func() time.Time
	// Log receives promotions (info) and failures (warn); a learner that is
	// not yet ready is logged at debug only. Default slog.Default().
	Log *slog.Logger
}

// RunPromoter promotes learners until ctx ends, one at a time, and returns
// then: the caller owns the goroutine it runs in. Until the loop-owner
// election exists, run it on every voter; PromoteOne tolerates the races.
func (m *Member) RunPromoter(ctx context.Context, opts PromoterOptions) {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 200 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(10*time.Second, opts.MinBackoff)
	}
	if opts.StaleLearnerAfter <= 0 {
		opts.StaleLearnerAfter = DefaultStaleLearnerAfter
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	backoff := opts.MinBackoff
	delay := time.Duration(0)
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		// A learner left by a joiner that died before its first start
		// never catches up; it goes before anything is promoted.
		removed, serr := m.RemoveStaleLearners(ctx, opts.StaleLearnerAfter, opts.Now())
		for _, id := range removed {
			log.Warn("removed a learner that never started (its join died between the add and the first start)",
				"member_id", fmt.Sprintf("%x", id), "unnamed_for_at_least", opts.StaleLearnerAfter)
		}
		if serr != nil && ctx.Err() == nil {
			log.Warn("remove stale learners", "err", serr)
		}
		m.nudgeJoiners(ctx, log)
		name, err := m.PromoteOne(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && name != "":
			log.Info("promoted learner to voter", "member", name)
			backoff, delay = opts.MinBackoff, 0 // another may be due at once
		case err == nil:
			backoff, delay = opts.MinBackoff, opts.Interval
		case errors.Is(err, ErrLearnerNotReady):
			log.Debug("learner still catching up; promotion retried", "err", err, "retry_in", backoff)
			delay, backoff = backoff, min(2*backoff, opts.MaxBackoff)
		default:
			log.Warn("promote learner", "err", err, "retry_in", backoff)
			delay, backoff = backoff, min(2*backoff, opts.MaxBackoff)
		}
		timer.Reset(delay)
	}
}

// nudgeKey is written while the cluster has a learner; its value means
// nothing.
const nudgeKey = "/otherix-raft-nudge"

// nudgeJoiners writes one entry, each round of the promoter, while the
// cluster has a learner. A joiner that catches up by a Raft snapshot (any
// joiner once the leader has compacted its log, past 10,000 entries) takes
// its applied index from the next entry it applies, not from the snapshot
// (etcd 3.7.3): until then its publish is refused "too many requests" in a
// hot loop, and on a cluster that writes nothing it never starts. (The
// member list cannot tell a joiner that has not published: AddLearner
// names it.) A fourth replica waiting for a fifth costs a write per
// promoter interval.
func (m *Member) nudgeJoiners(ctx context.Context, log *slog.Logger) {
	if m.IsLearner() {
		return
	}
	resp, err := m.client.MemberList(ctx)
	if err != nil {
		return
	}
	for _, mb := range resp.Members {
		if mb.IsLearner {
			if _, err := m.client.Put(ctx, nudgeKey, ""); err != nil && ctx.Err() == nil {
				log.Debug("nudge joining member", "err", err)
			}
			return
		}
	}
}
