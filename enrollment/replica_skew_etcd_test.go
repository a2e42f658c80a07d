//go:build etcd

package enrollment_test

import (
	"testing"

	"github.com/otherix/otherix/enrollment"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
)

// TestReplicaJoinVersionSkew: a cluster of two members, this one at 1.5.0
// and "two" whose row records 1.4.2. A joiner two minors from either is
// refused with version_skew naming that member, before its token is spent;
// a joiner of 1.5.x (or a dev build, or one that sends no version) joins,
// and its row records its version.
func TestReplicaJoinVersionSkew(t *testing.T) {
	s0, st, clock, fm := startReplicas(t)
	s := enrollment.New(enrollment.Config{Store: st, CA: s0.CA(), Log: quietLog, Now: clock.Now, Membership: fm, Version: "1.5.0"})
	fm.members = append(fm.members, etcd.MemberInfo{ID: 2, Name: "two", Role: etcd.RoleVoter, Healthy: true, PeerURL: "https://127.0.0.1:2382"})
	if err := st.RecordReplica(t.Context(), &messages.Replica{Name: "two", PeerURL: "https://127.0.0.1:2382", Version: "1.4.2"}); err != nil {
		t.Fatal(err)
	}
	// This replica's own row is stale on purpose: its running version counts.
	if err := st.RecordReplica(t.Context(), &messages.Replica{Name: "one", PeerURL: "https://127.0.0.1:2380", Version: "1.3.0"}); err != nil {
		t.Fatal(err)
	}
	tok := replicaToken(t, s, "")
	for _, c := range []struct{ version, member string }{{"1.6.0", "two"}, {"1.3.9", "one"}, {"2.0.0", "one"}} {
		req := joinReq(tok, "three", "https://127.0.0.1:2383", replicaCSR(t, "three"))
		req.Version = c.version
		_, err := s.JoinReplica(t.Context(), req, "192.0.2.7")
		wantCode(t, err, "version_skew")
		if me := err.(*messages.Error); me.Details["member"] != c.member || me.Details["replica_version"] != c.version {
			t.Fatalf("joiner %s: details %v, want member %s", c.version, me.Details, c.member)
		}
	}
	if len(fm.adds) != 0 {
		t.Fatalf("refused joins added %v", fm.adds)
	}
	req := joinReq(tok, "three", "https://127.0.0.1:2383", replicaCSR(t, "three"))
	req.Version = "1.5.3"
	if _, err := s.JoinReplica(t.Context(), req, "192.0.2.7"); err != nil {
		t.Fatalf("joiner 1.5.3 with members at 1.5.0 and 1.4.2: %v", err)
	}
	if r, err := st.GetReplica(t.Context(), "three"); err != nil || r.Version != "1.5.3" {
		t.Fatalf("joined row: %+v, %v", r, err)
	}
	// Unchecked: a dev build, and a joiner older than the version field.
	for i, v := range []string{"dev", ""} {
		name := []string{"four", "five"}[i]
		req := joinReq(replicaToken(t, s, ""), name, "https://127.0.0.1:239"+string(rune('4'+i)), replicaCSR(t, name))
		req.Version = v
		if _, err := s.JoinReplica(t.Context(), req, "192.0.2.7"); err != nil {
			t.Fatalf("joiner %q: %v", v, err)
		}
	}
}
