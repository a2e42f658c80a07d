//go:build etcd

package store_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

func newJoinToken(t *testing.T, s *store.Store, nodeName string, ttl time.Duration) *messages.JoinToken {
	t.Helper()
	_, id, _, err := security.NewJoinToken(strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	j := &messages.JoinToken{ID: id, Hash: security.HashToken("secret"),
		NodeName: nodeName, CreatedBy: "admin", CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := s.Commit(t.Context(), store.CreateJoinToken(store.NewTxn(), j)); err != nil {
		t.Fatal(err)
	}
	return j
}

func newNode(name string) *messages.Node {
	now := time.Now().UTC()
	return &messages.Node{ID: messages.NewID(), Name: name, CertFingerprint: "ab", Phase: messages.NodePending,
		EnrolledAt: now, UpdatedAt: now}
}

// TestLoadOrCreateCAOnce: replicas booting together share the one CA that won.
func TestLoadOrCreateCAOnce(t *testing.T) {
	s := startStore(t)
	var created atomic.Int32
	create := func() ([]byte, []byte, error) {
		ca, err := security.NewCA("otherix", time.Now())
		if err != nil {
			return nil, nil, err
		}
		created.Add(1)
		key, err := ca.KeyPEM()
		return ca.CertPEM(), key, err
	}
	var wg sync.WaitGroup
	certs := make([]string, 8)
	for i := range certs {
		wg.Go(func() {
			c, k, err := s.LoadOrCreateCA(t.Context(), create)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := security.LoadCA(c, k); err != nil {
				t.Error(err)
			}
			certs[i] = string(c)
		})
	}
	wg.Wait()
	for _, c := range certs[1:] {
		if c != certs[0] {
			t.Fatal("replicas got different CAs")
		}
	}
	if created.Load() == 0 {
		t.Fatal("create never ran")
	}
	// A later boot loads without creating.
	before := created.Load()
	c, _, err := s.LoadOrCreateCA(t.Context(), create)
	if err != nil || string(c) != certs[0] || created.Load() != before {
		t.Fatalf("reload: %v, created again: %v", err, created.Load() != before)
	}
}

func TestEnrollConsumesTokenOnce(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	j := newJoinToken(t, s, "", time.Hour)
	n := newNode("alpha")
	if err := s.Enroll(ctx, j.ID, j.Revision, n); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetJoinToken(ctx, j.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("token after enroll: %v, want not found", err)
	}
	if keyExists(t, s, store.IndexKey(store.JoinTokens, store.JoinTokenAllIndex, j.ID)) {
		t.Error("token index key left behind")
	}
	got, err := s.NodeByName(ctx, "alpha")
	if err != nil || got.ID != n.ID || got.Revision != n.Revision || got.Phase != messages.NodePending {
		t.Fatalf("node by name = %+v, %v", got, err)
	}
	if byID, err := s.GetNode(ctx, n.ID); err != nil || byID.Name != "alpha" {
		t.Fatalf("node by id = %+v, %v", byID, err)
	}
	// Reuse fails as consumed.
	if err := s.Enroll(ctx, j.ID, j.Revision, newNode("beta")); !errors.Is(err, store.ErrJoinTokenConsumed) {
		t.Fatalf("reuse: %v, want consumed", err)
	}
	// A taken name is a conflict and leaves the new token unused.
	j2 := newJoinToken(t, s, "", time.Hour)
	domainError(t, s.Enroll(ctx, j2.ID, j2.Revision, newNode("alpha")), "node_name_conflict")
	if _, err := s.GetJoinToken(ctx, j2.ID); err != nil {
		t.Fatalf("token after refused enroll: %v", err)
	}
	// UpdateNode is a compare-and-set.
	got.Phase = messages.NodeReady
	if err := s.Commit(ctx, store.UpdateNode(store.NewTxn(), got)); err != nil {
		t.Fatal(err)
	}
	stale := *got
	stale.Revision = n.Revision
	if err := s.Commit(ctx, store.UpdateNode(store.NewTxn(), &stale)); messages.KindOf(err) != messages.KindStale {
		t.Fatalf("stale update: %v", err)
	}
	nodes, next, err := s.ListNodes(ctx, store.Page{})
	if err != nil || len(nodes) != 1 || next != "" || nodes[0].Phase != messages.NodeReady {
		t.Fatalf("list = %v %q %v", nodes, next, err)
	}
	// Delete frees the name.
	if err := s.Commit(ctx, store.DeleteNode(store.NewTxn(), nodes[0])); err != nil {
		t.Fatal(err)
	}
	if err := s.Enroll(ctx, j2.ID, j2.Revision, newNode("alpha")); err != nil {
		t.Fatalf("enroll after delete: %v", err)
	}
}

func TestConcurrentEnrollOneToken(t *testing.T) {
	s := startStore(t)
	for round := range 5 {
		j := newJoinToken(t, s, "", time.Hour)
		var ok, consumed atomic.Int32
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				name := []string{"a", "b", "c", "d"}[i] + string(rune('0'+round))
				err := s.Enroll(t.Context(), j.ID, j.Revision, newNode(name))
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, store.ErrJoinTokenConsumed):
					consumed.Add(1)
				default:
					t.Errorf("enroll: %v", err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 1 || consumed.Load() != 3 {
			t.Fatalf("round %d: %d succeeded, %d consumed", round, ok.Load(), consumed.Load())
		}
	}
}

func TestJoinTokenRevokeAndSweep(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	live := newJoinToken(t, s, "n1", time.Hour)
	old := newJoinToken(t, s, "", time.Minute)
	gone := newJoinToken(t, s, "", time.Hour)
	if err := s.RevokeJoinToken(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeJoinToken(ctx, gone.ID); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("second revoke: %v", err)
	}
	n, err := s.SweepJoinTokens(ctx, time.Now().Add(10*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("sweep = %d, %v", n, err)
	}
	js, _, err := s.ListJoinTokens(ctx, store.Page{})
	if err != nil || len(js) != 1 || js[0].ID != live.ID || js[0].NodeName != "n1" {
		t.Fatalf("list = %+v, %v", js, err)
	}
	if keyExists(t, s, store.IndexKey(store.JoinTokens, store.JoinTokenAllIndex, old.ID)) {
		t.Error("swept token's index key left behind")
	}
}

// TestTunnelIPsUniqueUnderConcurrency: nodes joining the mesh at once get
// distinct host addresses of the supernet, each under its guard; a node
// that has one keeps it; a full supernet says so; a deleted node frees its
// address.
func TestTunnelIPsUniqueUnderConcurrency(t *testing.T) {
	s := startStore(t)
	ctx := t.Context()
	const n, supernet = 20, "10.240.0.0/27" // 30 host addresses
	nodes := make([]*messages.Node, n)
	for i := range nodes {
		nodes[i] = newNode(fmt.Sprintf("n%d", i))
		if err := s.Commit(ctx, store.CreateNode(store.NewTxn(), nodes[i])); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, nd := range nodes {
		wg.Go(func() { errs[i] = s.UpdateNodeWithTunnelIP(ctx, nd, supernet) })
	}
	wg.Wait()
	p := netip.MustParsePrefix(supernet)
	seen := map[string]bool{}
	for i, nd := range nodes {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		a, err := netip.ParseAddr(nd.TunnelIP)
		if err != nil || !p.Contains(a) || a == p.Addr() || seen[nd.TunnelIP] {
			t.Fatalf("node %d: tunnel ip %q (taken before: %v)", i, nd.TunnelIP, seen[nd.TunnelIP])
		}
		seen[nd.TunnelIP] = true
		if owner, err := s.TunnelIPOwner(ctx, nd.TunnelIP); err != nil || owner != nd.ID {
			t.Fatalf("guard of %s: %q %v", nd.TunnelIP, owner, err)
		}
		row, err := s.GetNode(ctx, nd.ID)
		if err != nil || row.TunnelIP != nd.TunnelIP {
			t.Fatalf("row of node %d: %+v %v", i, row, err)
		}
	}
	// Allocated once: an update keeps it.
	kept := nodes[0].TunnelIP
	if err := s.UpdateNodeWithTunnelIP(ctx, nodes[0], supernet); err != nil || nodes[0].TunnelIP != kept {
		t.Fatalf("second allocation: %q %v", nodes[0].TunnelIP, err)
	}

	full := newNode("full")
	if err := s.Commit(ctx, store.CreateNode(store.NewTxn(), full)); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateNodeWithTunnelIP(ctx, full, "10.250.0.0/30"); err != nil {
		t.Fatal(err) // .1
	}
	other := newNode("other")
	if err := s.Commit(ctx, store.CreateNode(store.NewTxn(), other)); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateNodeWithTunnelIP(ctx, other, "10.250.0.0/30"); err != nil {
		t.Fatal(err) // .2
	}
	last := newNode("last")
	if err := s.Commit(ctx, store.CreateNode(store.NewTxn(), last)); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateNodeWithTunnelIP(ctx, last, "10.250.0.0/30"); !errors.Is(err, store.ErrTunnelIPsExhausted) {
		t.Fatalf("full supernet: %v", err)
	}

	if err := s.Commit(ctx, store.DeleteNode(store.NewTxn(), nodes[3])); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TunnelIPOwner(ctx, nodes[3].TunnelIP); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("deleted node's tunnel ip still held: %v", err)
	}
}

// TestTunnelIPsAcrossReplicas: two stores on one etcd (two API replicas,
// each with its own allocation map) allocate at once and never hand out an
// address twice: a pick the other replica took is a lost race, and the map
// is read again.
func TestTunnelIPsAcrossReplicas(t *testing.T) {
	s1 := startStore(t)
	s2 := store.New(s1.Client())
	ctx := t.Context()
	const n, supernet = 24, "10.241.0.0/27" // 30 host addresses
	nodes := make([]*messages.Node, n)
	for i := range nodes {
		nodes[i] = newNode(fmt.Sprintf("r%d", i))
		if err := s1.Commit(ctx, store.CreateNode(store.NewTxn(), nodes[i])); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, nd := range nodes {
		s := s1
		if i%2 == 1 {
			s = s2
		}
		wg.Go(func() { errs[i] = s.UpdateNodeWithTunnelIP(ctx, nd, supernet) })
	}
	wg.Wait()
	seen := map[string]int{}
	for i, nd := range nodes {
		if errs[i] != nil {
			t.Fatalf("node %d: %v", i, errs[i])
		}
		if j, dup := seen[nd.TunnelIP]; dup {
			t.Fatalf("nodes %d and %d both hold %s", j, i, nd.TunnelIP)
		}
		seen[nd.TunnelIP] = i
		if owner, err := s2.TunnelIPOwner(ctx, nd.TunnelIP); err != nil || owner != nd.ID {
			t.Fatalf("guard of %s: %q %v", nd.TunnelIP, owner, err)
		}
	}
}
