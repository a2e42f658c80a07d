package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// bootRetryFor bounds how long a boot step waits for the store to answer:
// a replica started during an election (a restarted leader, a rolling
// restart) sees "leader changed" or no_quorum for a second or two, which
// is no reason to exit.
const bootRetryFor = time.Minute

// retryBoot runs step until it succeeds, fails for a reason an election
// does not explain, bootRetryFor has passed, or ctx ends. Every boot step
// is safe to run again: each reads before it writes and writes by
// compare-and-set.
func retryBoot(ctx context.Context, log *slog.Logger, what string, step func() error) error {
	deadline := time.Now().Add(bootRetryFor)
	wait := 100 * time.Millisecond
	logged := false
	for {
		err := step()
		if err == nil || !electionError(err) || time.Now().After(deadline) {
			return err
		}
		if !logged {
			log.Info("the store is electing a leader: boot step waits", "step", what, "err", err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// electionError reports whether err says the store could not answer for
// now (no leader, a leader change, no quorum), as opposed to refusing.
func electionError(err error) bool {
	return store.IsNoQuorum(err) || errors.Is(err, rpctypes.ErrLeaderChanged) ||
		errors.Is(err, rpctypes.ErrGRPCLeaderChanged) || messages.KindOf(err) == messages.KindUnavailable
}
