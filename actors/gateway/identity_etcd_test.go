//go:build etcd

package gateway_test

import (
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/identity"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// Identity fixtures of the gateway's tests (enrollment, VM names, the audit
// of anonymous failures); identity's own tests live in package identity.

const (
	adminEmail = "Admin@Example.com"
	adminPass  = "plum-otter-lantern-93"
	devPass    = "quiet-violet-harbor-17"
)

// startIdentity runs a gateway with a bootstrapped admin.
func startIdentity(t *testing.T, idc identity.Config) (*gateway.Gateway, *store.Store) {
	t.Helper()
	cfg := fastJobs()
	cfg.Identity = idc
	g, st := startGateway(t, cfg)
	created, gen, err := g.BootstrapAdmin(t.Context(), adminEmail, adminPass)
	if err != nil || !created || gen != "" {
		t.Fatalf("bootstrap admin = %v %q %v", created, gen, err)
	}
	return g, st
}

// auditHas waits for an audit entry with the action, target and result.
func auditHas(t *testing.T, g *gateway.Gateway, action, target, result string) bool {
	t.Helper()
	return testutil.Until(5*time.Second, 5*time.Millisecond, func() bool {
		entries, _, err := g.ListAudit(t.Context(), store.Page{Limit: store.MaxPageSize})
		if err != nil {
			return false
		}
		for _, e := range entries {
			if e.Action == action && e.Target == target && e.Result == result {
				return true
			}
		}
		return false
	})
}

func allAudit(t *testing.T, g *gateway.Gateway) []messages.AuditEntry {
	t.Helper()
	var out []messages.AuditEntry
	page := store.Page{Limit: store.MaxPageSize}
	for {
		es, next, err := g.ListAudit(t.Context(), page)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, es...)
		if next == "" {
			return out
		}
		page.Cursor = next
	}
}
