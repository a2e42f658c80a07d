package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/otherix/otherix/messages"
)

// TestRetryBoot: a boot step that meets an election is run again until it
// passes; a refusal is returned at once, as is a cancelled start.
func TestRetryBoot(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, transient := range []error{
		fmt.Errorf("bootstrap admin: %w", rpctypes.ErrLeaderChanged),
		messages.ErrNoQuorum,
		&messages.Error{Kind: messages.KindUnavailable, Code: "unavailable", Message: "etcd did not answer", Err: rpctypes.ErrGRPCLeaderChanged},
	} {
		calls := 0
		err := retryBoot(t.Context(), log, "step", func() error {
			calls++
			if calls < 3 {
				return transient
			}
			return nil
		})
		if err != nil || calls != 3 {
			t.Errorf("after %v: err %v, %d calls; want success on the 3rd", transient, err, calls)
		}
	}
	refused := errors.New("store: the data is corrupt")
	calls := 0
	if err := retryBoot(t.Context(), log, "step", func() error { calls++; return refused }); !errors.Is(err, refused) || calls != 1 {
		t.Errorf("a refusal: err %v after %d calls; want it at once", err, calls)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := retryBoot(ctx, log, "step", func() error { return messages.ErrNoQuorum }); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled start: %v", err)
	}
}
