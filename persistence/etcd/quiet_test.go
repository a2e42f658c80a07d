package etcd

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestQuietCoreDropsExpected: etcd's error line for a learner that is not
// caught up is dropped (RunPromoter retries it), others pass, also through
// a logger derived With fields as etcd's are.
func TestQuietCoreDropsExpected(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	lg := zap.New(quietCore{core}).With(zap.String("member", "a"))
	lg.Error("rejecting promote learner: learner is not ready", zap.Float64("learner-ready-percent", 0.5))
	lg.Error("something else")
	if logs.Len() != 1 || logs.All()[0].Message != "something else" {
		t.Fatalf("logged %v, want only the unexpected line", logs.All())
	}
}
