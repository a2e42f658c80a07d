package server

import (
	"fmt"
	"net/http"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/otherix/otherix/messages"
)

// TestNoSpaceIsStorageFull: etcd's space refusal is 507 storage_full
// whatever wrapped it on the way up, including a layer that called it
// unavailable.
func TestNoSpaceIsStorageFull(t *testing.T) {
	for name, err := range map[string]error{
		"bare":        rpctypes.ErrNoSpace,
		"grpc":        rpctypes.ErrGRPCNoSpace,
		"wrapped":     fmt.Errorf("start session: %w", rpctypes.ErrNoSpace),
		"unavailable": &messages.Error{Kind: messages.KindUnavailable, Code: "unavailable", Message: "etcd did not answer", Err: rpctypes.ErrNoSpace},
		"sentinel":    messages.ErrStorageFull,
	} {
		e, rule := classify(err)
		if rule.status != http.StatusInsufficientStorage || e.Code != "storage_full" || rule.code != "" {
			t.Errorf("%s: status %d code %q (rule code %q), want 507 storage_full", name, rule.status, e.Code, rule.code)
		}
	}
	if _, rule := classify(&messages.Error{Kind: messages.KindUnavailable, Code: "unavailable", Err: rpctypes.ErrTimeout}); rule.status != http.StatusServiceUnavailable {
		t.Errorf("another etcd failure: status %d, want 503", rule.status)
	}
}
