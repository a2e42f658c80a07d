//go:build etcd

package enrollment_test

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/enrollment"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// fakeMembership stands for the etcd membership, the far side of the join:
// the real AddLearner is tested in persistence/etcd and end to end
// (test/e2e). It records adds and can be told to fail them.
type fakeMembership struct {
	mu      sync.Mutex
	members []etcd.MemberInfo
	addErr  error
	adds    []string
	// removeErr is what Remove answers; removes records the ids asked.
	removeErr error
	removes   []uint64
}

func (f *fakeMembership) Remove(_ context.Context, id uint64, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removes = append(f.removes, id)
	if f.removeErr != nil {
		return f.removeErr
	}
	for i, m := range f.members {
		if m.ID == id {
			f.members = append(f.members[:i], f.members[i+1:]...)
			return nil
		}
	}
	return etcd.ErrMemberNotFound
}

func (f *fakeMembership) AddLearner(_ context.Context, name, peerURL string) (uint64, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addErr != nil {
		return 0, "", f.addErr
	}
	f.adds = append(f.adds, name)
	f.members = append(f.members, etcd.MemberInfo{ID: uint64(len(f.members) + 1), Role: etcd.RoleLearner, PeerURL: peerURL})
	return uint64(len(f.members)), "one=https://127.0.0.1:2380," + name + "=" + peerURL, nil
}

func (f *fakeMembership) Members(context.Context) ([]etcd.MemberInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]etcd.MemberInfo(nil), f.members...), nil
}

func (f *fakeMembership) ClusterID() uint64 { return 0xc1 }

func startReplicas(t *testing.T) (*enrollment.Service, *store.Store, *testutil.Clock, *fakeMembership) {
	t.Helper()
	s, st, clock, _ := start(t)
	fm := &fakeMembership{members: []etcd.MemberInfo{{ID: 1, Name: "one", Role: etcd.RoleVoter, IsLeader: true,
		Healthy: true, PeerURL: "https://127.0.0.1:2380", Self: true}}}
	s = enrollment.New(enrollment.Config{Store: st, CA: s.CA(), Log: quietLog, Now: clock.Now, Membership: fm})
	return s, st, clock, fm
}

func replicaToken(t *testing.T, s *enrollment.Service, ttl string) string {
	t.Helper()
	created, err := s.CreateClusterJoinToken(t.Context(), adminPrincipal,
		messages.CreateClusterJoinTokenRequest{Kind: "replica", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.Token, "otxr_") || !strings.HasSuffix(created.Token, "@"+s.CA().Fingerprint()) ||
		created.JoinToken.Kind != "replica" {
		t.Fatalf("created %+v", created)
	}
	return created.Token
}

func replicaCSR(t *testing.T, name string, sans ...string) string {
	t.Helper()
	if len(sans) == 0 {
		sans = []string{"127.0.0.1"}
	}
	_, der, err := security.NewReplicaKeyAndCSR(name, sans)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func joinReq(token, name, peer, csr string) messages.ReplicaJoinRequest {
	return messages.ReplicaJoinRequest{Token: token, Name: name, PeerURL: peer, CSR: csr,
		APIURL: "https://127.0.0.1:7080", AgentURL: "https://127.0.0.1:7443"}
}

func TestReplicaJoin(t *testing.T) {
	s, st, _, fm := startReplicas(t)
	tok := replicaToken(t, s, "")
	resp, err := s.JoinReplica(t.Context(), joinReq(tok, "two", "https://127.0.0.1:2381", replicaCSR(t, "two")), "192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCert(t, []byte(resp.Certificate))
	if name, err := security.ReplicaNameFromCert(cert); err != nil || name != "two" {
		t.Fatalf("peer cert: %q, %v", name, err)
	}
	if resp.CA != string(s.CA().CertPEM()) || resp.ClusterID != "c1" ||
		resp.InitialCluster != "one=https://127.0.0.1:2380,two=https://127.0.0.1:2381" {
		t.Fatalf("answer %+v", resp)
	}
	r, err := st.GetReplica(t.Context(), "two")
	if err != nil || r.PeerURL != "https://127.0.0.1:2381" || r.APIURL != "https://127.0.0.1:7080" {
		t.Fatalf("replica row %+v, %v", r, err)
	}
	// One-time: the second use is refused and adds nothing.
	_, err = s.JoinReplica(t.Context(), joinReq(tok, "three", "https://127.0.0.1:2382", replicaCSR(t, "three")), "192.0.2.7")
	wantInvalidJoinToken(t, err)
	if len(fm.adds) != 1 {
		t.Fatalf("adds %v", fm.adds)
	}
}

// TestReplicaJoinRefusals: every refusal has its code, adds no member and,
// when it comes before the commit, leaves the token usable.
func TestReplicaJoinRefusals(t *testing.T) {
	s, _, clock, fm := startReplicas(t)
	tok := replicaToken(t, s, "")
	head, _, _ := strings.Cut(tok, "@")
	other, err := security.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nodeTok := joinToken(t, s, messages.CreateJoinTokenRequest{})
	fm.members = append(fm.members, etcd.MemberInfo{ID: 9, Role: etcd.RoleLearner, PeerURL: "https://127.0.0.1:2399"})
	for _, c := range []struct {
		name string
		req  messages.ReplicaJoinRequest
		code string
	}{
		{"wrong ca", joinReq(head+"@"+other.Fingerprint(), "two", "https://127.0.0.1:2381", replicaCSR(t, "two")), "invalid_join_token"},
		{"node token", joinReq(nodeTok, "two", "https://127.0.0.1:2381", replicaCSR(t, "two")), "invalid_join_token"},
		// The stored kind decides, not the prefix presented.
		{"node token with the replica prefix", joinReq("otxr_"+strings.TrimPrefix(nodeTok, "otxj_"), "two", "https://127.0.0.1:2381", replicaCSR(t, "two")), "invalid_join_token"},
		{"http peer", joinReq(tok, "two", "http://127.0.0.1:2381", replicaCSR(t, "two")), "invalid_peer_url"},
		{"no port", joinReq(tok, "two", "https://127.0.0.1", replicaCSR(t, "two")), "invalid_peer_url"},
		{"path", joinReq(tok, "two", "https://127.0.0.1:2381/x", replicaCSR(t, "two")), "invalid_peer_url"},
		{"host:port only", joinReq(tok, "two", "127.0.0.1:2381", replicaCSR(t, "two")), "invalid_peer_url"},
		{"bad name", joinReq(tok, "Two_", "https://127.0.0.1:2381", replicaCSR(t, "two")), invalidNameCode()},
		{"name is a member", joinReq(tok, "one", "https://127.0.0.1:2381", replicaCSR(t, "one")), "replica_name_conflict"},
		{"peer url is a member's", joinReq(tok, "two", "https://127.0.0.1:2380", replicaCSR(t, "two")), "peer_url_conflict"},
		{"peer url of an unstarted learner", joinReq(tok, "two", "https://127.0.0.1:2399", replicaCSR(t, "two")), "peer_url_conflict"},
		{"csr for another name", joinReq(tok, "two", "https://127.0.0.1:2381", replicaCSR(t, "three")), "csr_policy"},
		{"node csr", joinReq(tok, "two", "https://127.0.0.1:2381", csrPEM(t, "two")), "csr_policy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.JoinReplica(t.Context(), c.req, "192.0.2.7")
			wantCode(t, err, c.code)
		})
	}
	// A replica token does not enroll a node, with either prefix.
	_, err = enroll(s, t.Context(), tok, "n1", csrPEM(t, "n1"))
	wantInvalidJoinToken(t, err)
	_, err = enroll(s, t.Context(), "otxj_"+strings.TrimPrefix(tok, "otxr_"), "n1", csrPEM(t, "n1"))
	wantInvalidJoinToken(t, err)
	if len(fm.adds) != 0 {
		t.Fatalf("refused joins added %v", fm.adds)
	}
	// Expired.
	clock.Add(2 * time.Hour)
	_, err = s.JoinReplica(t.Context(), joinReq(tok, "two", "https://127.0.0.1:2381", replicaCSR(t, "two")), "192.0.2.7")
	wantInvalidJoinToken(t, err)
	clock.Add(-2 * time.Hour)
	// Every refusal above left the token usable.
	if _, err := s.JoinReplica(t.Context(), joinReq(tok, "two", "https://127.0.0.1:2381", replicaCSR(t, "two")), "192.0.2.7"); err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateClusterJoinToken(t.Context(), adminPrincipal, messages.CreateClusterJoinTokenRequest{Kind: "node"})
	wantCode(t, err, "invalid_kind")
	_, err = s.CreateClusterJoinToken(t.Context(), adminPrincipal, messages.CreateClusterJoinTokenRequest{Kind: "replica", TTL: "48h"})
	wantCode(t, err, "invalid_ttl")
}

// TestReplicaJoinOnUnixPeer: a replica without a peer listener cannot take
// joiners, who could never reach it.
func TestReplicaJoinOnUnixPeer(t *testing.T) {
	s, _, _, fm := startReplicas(t)
	fm.members[0].PeerURL = "unix:///var/lib/otherix/peer.sock"
	_, err := s.JoinReplica(t.Context(), joinReq(replicaToken(t, s, ""), "two", "https://127.0.0.1:2381", replicaCSR(t, "two")), "192.0.2.7")
	wantCode(t, err, "peer_listener_required")
}

// TestReplicaJoinAddFails: the token is spent, the replica row removed, no
// member exists; a retry with a fresh token succeeds.
func TestReplicaJoinAddFails(t *testing.T) {
	s, st, _, fm := startReplicas(t)
	fm.addErr = errors.New("etcdserver: unhealthy cluster")
	tok := replicaToken(t, s, "")
	req := joinReq(tok, "two", "https://127.0.0.1:2381", replicaCSR(t, "two"))
	_, err := s.JoinReplica(t.Context(), req, "192.0.2.7")
	wantCode(t, err, "member_add_failed")
	if _, err := st.GetReplica(t.Context(), "two"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("row after a failed add: %v", err)
	}
	fm.addErr = nil
	_, err = s.JoinReplica(t.Context(), req, "192.0.2.7")
	wantInvalidJoinToken(t, err)
	req.Token = replicaToken(t, s, "")
	if _, err := s.JoinReplica(t.Context(), req, "192.0.2.7"); err != nil {
		t.Fatalf("retry with a fresh token: %v", err)
	}
	if len(fm.adds) != 1 {
		t.Fatalf("adds %v", fm.adds)
	}
}

// TestConcurrentReplicaJoinOneName: two joins for one name with two tokens
// race; exactly one records the replica and adds a member.
func TestConcurrentReplicaJoinOneName(t *testing.T) {
	s, _, _, fm := startReplicas(t)
	for round := range 5 {
		fm.mu.Lock()
		fm.members, fm.adds = fm.members[:1], nil
		fm.mu.Unlock()
		name := "r" + string(rune('a'+round))
		toks := []string{replicaToken(t, s, ""), replicaToken(t, s, "")}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.JoinReplica(context.Background(), joinReq(toks[i], name, "https://127.0.0.1:"+string(rune('3'+i))+"381", replicaCSR(t, name)), "192.0.2.7")
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			} else {
				wantCode(t, err, "replica_name_conflict")
			}
		}
		if ok != 1 || len(fm.adds) != 1 {
			t.Fatalf("round %d: %v, adds %v", round, errs, fm.adds)
		}
	}
}

func invalidNameCode() string {
	var me *messages.Error
	errors.As(messages.ValidateName("name", "Two_"), &me)
	return me.Code
}

// TestReplicaJoinStaleRow: a row left by a join that died after its commit
// blocks the name for a while, then a new join takes it over.
func TestReplicaJoinStaleRow(t *testing.T) {
	s, st, clock, _ := startReplicas(t)
	if err := st.RecordReplica(t.Context(), &messages.Replica{Name: "two", PeerURL: "https://127.0.0.1:2381", JoinedAt: clock.Now()}); err != nil {
		t.Fatal(err)
	}
	req := joinReq(replicaToken(t, s, "24h"), "two", "https://127.0.0.1:2381", replicaCSR(t, "two"))
	_, err := s.JoinReplica(t.Context(), req, "192.0.2.7")
	wantCode(t, err, "replica_name_conflict")
	clock.Add(3 * time.Minute)
	if _, err := s.JoinReplica(t.Context(), req, "192.0.2.7"); err != nil {
		t.Fatal(err)
	}
}

// TestRemoveClusterMember: a member is found by name, id or peer address;
// its row and the row of a join at its peer URL go with it; the membership
// layer's refusals keep their codes and leave the rows.
func TestRemoveClusterMember(t *testing.T) {
	s, st, _, fm := startReplicas(t)
	// A join whose joiner never started: an unnamed learner, and its row.
	if _, err := s.JoinReplica(t.Context(), joinReq(replicaToken(t, s, ""), "two", "https://127.0.0.1:2381", replicaCSR(t, "two")), "192.0.2.7"); err != nil {
		t.Fatal(err)
	}
	m, err := s.RemoveClusterMember(t.Context(), "127.0.0.1:2381", false)
	if err != nil || m.Name != "" || m.ID != "2" {
		t.Fatalf("remove by peer address = %+v, %v", m, err)
	}
	if _, err := st.GetReplica(t.Context(), "two"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("the join's row stays after its learner was removed: %v", err)
	}
	fm.members = append(fm.members, etcd.MemberInfo{ID: 0x3a, Name: "three", Role: etcd.RoleVoter, Healthy: true, PeerURL: "https://127.0.0.1:2383"})
	if err := st.RecordReplica(t.Context(), &messages.Replica{Name: "three", PeerURL: "https://127.0.0.1:2383", Version: "v9"}); err != nil {
		t.Fatal(err)
	}
	ms, err := s.ClusterMembers(t.Context())
	if err != nil || len(ms) != 2 || ms[1].Version != "v9" {
		t.Fatalf("members %+v, %v", ms, err)
	}
	for _, c := range []struct {
		err  error
		code string
	}{
		{&etcd.QuorumError{Voters: 2, Healthy: 1, Needed: 2}, "quorum_at_risk"},
		{fmt.Errorf("%w (three)", etcd.ErrLastVoter), "last_voter"},
		{fmt.Errorf("%w: 3a", etcd.ErrMemberNotFound), "not_found"},
	} {
		fm.removeErr = c.err
		_, err := s.RemoveClusterMember(t.Context(), "three", false)
		wantCode(t, err, c.code)
		if _, err := st.GetReplica(t.Context(), "three"); err != nil {
			t.Fatalf("refused removal (%s) dropped the row: %v", c.code, err)
		}
	}
	fm.removeErr = nil
	_, err = s.RemoveClusterMember(t.Context(), "nobody", true)
	wantCode(t, err, "not_found")
	if m, err := s.RemoveClusterMember(t.Context(), "3A", false); err != nil || m.Name != "three" {
		t.Fatalf("remove by id = %+v, %v", m, err)
	}
	if _, err := st.GetReplica(t.Context(), "three"); messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("row of a removed member: %v", err)
	}
	if want := []uint64{2, 0x3a, 0x3a, 0x3a, 0x3a}; fmt.Sprint(fm.removes) != fmt.Sprint(want) {
		t.Fatalf("removes %v, want %v", fm.removes, want)
	}
}

// TestReplicaJoinMemberOf: a joiner whose data dir holds a member asks only
// whether the cluster is its own: the same id is answered alone, another
// is refused naming both; neither spends a token or adds a member.
func TestReplicaJoinMemberOf(t *testing.T) {
	s, _, _, fm := startReplicas(t)
	tok := replicaToken(t, s, "")
	resp, err := s.JoinReplica(t.Context(), messages.ReplicaJoinRequest{Name: "two", MemberOf: "c1"}, "192.0.2.7")
	if err != nil || resp.ClusterID != "c1" || resp.Certificate != "" || resp.InitialCluster != "" {
		t.Fatalf("same cluster: %+v, %v", resp, err)
	}
	_, err = s.JoinReplica(t.Context(), messages.ReplicaJoinRequest{Token: tok, Name: "two", MemberOf: "abc123"}, "192.0.2.7")
	wantCode(t, err, "cluster_mismatch")
	var me *messages.Error
	if !errors.As(err, &me) || me.Details["cluster_id"] != "c1" || me.Details["data_dir_cluster_id"] != "abc123" ||
		!strings.Contains(me.Message, "abc123") || !strings.Contains(me.Message, "c1") {
		t.Fatalf("mismatch error %+v", err)
	}
	if len(fm.adds) != 0 {
		t.Fatalf("checks added %v", fm.adds)
	}
	// The token presented with the check is still good.
	if _, err := s.JoinReplica(t.Context(), joinReq(tok, "two", "https://127.0.0.1:2381", replicaCSR(t, "two")), "192.0.2.7"); err != nil {
		t.Fatal(err)
	}
}
