package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"expvar"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/raft/v3"
)

// Roles of a member, as GET /v1/cluster/members shows them.
const (
	RoleVoter   = "voter"
	RoleLearner = "learner"
)

// NoteWaitsForOddVoters explains a caught-up learner left as a learner on
// purpose: promoting it would make the number of voters even, which adds a
// member that must answer without adding a failure the cluster survives.
const NoteWaitsForOddVoters = "waits for another replica to join: the number of voters stays odd"

// MemberInfo is one member as this replica sees it.
type MemberInfo struct {
	// ID is etcd's member id.
	ID uint64
	// Name is the replica name; empty for a member added but not yet started.
	Name string
	// Role is RoleVoter or RoleLearner.
	Role string
	// IsLeader is this replica's view of the Raft leader.
	IsLeader bool
	// Healthy: for this replica, it knows a leader; for another, its peer
	// listener answered over mutual TLS within the probe timeout.
	Healthy bool
	// PeerURL is where peers reach it (its first advertised peer URL).
	PeerURL string
	// Self marks the member this process embeds.
	Self bool
	// Note says why a learner is not promoted, if it is on purpose.
	Note string
	// RaftIndexLag is how many Raft log entries the member is behind the
	// leader's commit index, nil when this replica cannot tell: the leader
	// knows every member's replication progress, a follower only its own
	// (its commit index less its applied index).
	RaftIndexLag *uint64
	// EtcdVersion is the member's etcd server version, as its peer
	// listener answers it (empty when it does not answer).
	EtcdVersion string
}

// probeTimeout bounds the health probe of one peer.
const probeTimeout = time.Second

// IsLearner reports whether this member is a learner. etcd refuses most
// client requests on a learner, but the in-process client bypasses that
// guard, so the API must check this itself and serve nothing while true.
// A member removed from the cluster counts as one too: it must serve
// nothing either (and etcd's own IsLearner panics once the member is gone
// from its membership).
func (m *Member) IsLearner() bool {
	s := m.server.Server
	mb := s.Cluster().Member(s.MemberID())
	return mb == nil || mb.IsLearner
}

// WaitVoter returns once this member is a voter, polling every interval
// (100ms when 0), or ctx's error when it ends first. A replica that joined
// as a learner calls it before it starts serving.
func (m *Member) WaitVoter(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for m.IsLearner() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd: still a learner: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// ClusterID is the id of the cluster this member belongs to; a join
// handshake compares it with the cluster it was asked to join.
func (m *Member) ClusterID() uint64 { return uint64(m.server.Server.Cluster().ID()) }

// ID is this member's etcd id.
func (m *Member) ID() uint64 { return uint64(m.server.Server.MemberID()) }

// LeaderID is the id of the leader this member knows, 0 when it knows none.
func (m *Member) LeaderID() uint64 { return uint64(m.server.Server.Leader()) }

// Members lists the cluster's members, sorted by name. It reads this
// member's local copy of the membership (serializable), so it answers
// without quorum: that is when an operator needs it most.
func (m *Member) Members(ctx context.Context) ([]MemberInfo, error) {
	resp, err := m.client.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("etcd: list members: %w", err)
	}
	lead, self := m.LeaderID(), m.ID()
	lags := m.raftLags()
	out := make([]MemberInfo, len(resp.Members))
	var wg sync.WaitGroup
	for i, mb := range resp.Members {
		info := MemberInfo{ID: mb.ID, Name: mb.Name, Role: RoleVoter, IsLeader: mb.ID == lead, Self: mb.ID == self}
		if mb.IsLearner {
			info.Role = RoleLearner
		}
		if len(mb.PeerURLs) > 0 {
			info.PeerURL = mb.PeerURLs[0]
		}
		if lag, ok := lags[mb.ID]; ok {
			info.RaftIndexLag = &lag
		}
		out[i] = info
		switch {
		case info.Self:
			out[i].Healthy = lead != 0
			out[i].EtcdVersion = version.Version
		case info.Name != "" && info.PeerURL != "":
			wg.Add(1)
			go func(i int, u string) {
				defer wg.Done()
				out[i].Healthy, out[i].EtcdVersion = m.probePeer(ctx, u)
			}(i, info.PeerURL)
		}
	}
	wg.Wait()
	voters, learners := countRoles(resp.Members)
	if promotionTarget(voters, learners) <= voters {
		for i := range out {
			if out[i].Role == RoleLearner && out[i].Name != "" {
				out[i].Note = NoteWaitsForOddVoters
			}
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Name != out[b].Name {
			return out[a].Name < out[b].Name
		}
		return out[a].ID < out[b].ID
	})
	return out, nil
}

// probePeer asks a peer listener for its version, over mutual TLS with
// this member's peer certificate: healthy when it answers, and the etcd
// server version it names.
func (m *Member) probePeer(ctx context.Context, peerURL string) (healthy bool, etcdVersion string) {
	if m.peerHTTP == nil || !strings.HasPrefix(peerURL, "https://") {
		return false, ""
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(peerURL, "/")+"/version", nil)
	if err != nil {
		return false, ""
	}
	resp, err := m.peerHTTP.Do(req)
	if err != nil {
		return false, ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, ""
	}
	var v struct {
		Server string `json:"etcdserver"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&v)
	return true, v.Server
}

// raftLags answers each member's lag behind the leader's commit index, as
// far as this member knows it: every member's when it leads (from its
// replication progress, Match), else only its own. etcd publishes its Raft
// status only as the expvar "raft.status", of the last member started in
// the process; it is used only when it is this member's.
func (m *Member) raftLags() map[uint64]uint64 {
	self := m.ID()
	out := map[uint64]uint64{}
	commit, applied := m.server.Server.CommittedIndex(), m.server.Server.AppliedIndex()
	out[self] = sub0(commit, applied)
	v, ok := expvar.Get("raft.status").(expvar.Func)
	if !ok || m.LeaderID() != self {
		return out
	}
	st, ok := v().(raft.Status)
	if !ok || st.ID != self || st.RaftState != raft.StateLeader {
		return out
	}
	for id, p := range st.Progress {
		if id != self {
			out[id] = sub0(st.GetCommit(), p.Match)
		}
	}
	return out
}

func sub0(a, b uint64) uint64 {
	if b >= a {
		return 0
	}
	return a - b
}

// AddLearner adds a new member at peerURL as a learner, through this
// member, and returns its id and the initial-cluster string it must start
// with (Config.Join). It retries while etcd reports the cluster unhealthy
// for a membership change (for a few seconds after the last one), until ctx
// ends. A learner receives the log but does not vote, so a
// replica that joins and then fails to start does not cost quorum.
func (m *Member) AddLearner(ctx context.Context, name, peerURL string) (id uint64, initialCluster string, err error) {
	u, err := url.Parse(peerURL)
	if err != nil || u.Scheme != "https" || u.Port() == "" {
		return 0, "", fmt.Errorf("%w: learner %s at %q: want https://HOST:PORT", ErrBadPeerURL, name, peerURL)
	}
	if name == "" {
		return 0, "", fmt.Errorf("%w: learner needs a name", ErrBadJoin)
	}
	// A joiner refuses a cluster whose version is not decided yet ("incompatible
	// with current running cluster"); the leader decides it shortly after the
	// first start, so a join right then would fail after the add.
	for m.server.Server.ClusterVersion() == nil {
		select {
		case <-ctx.Done():
			return 0, "", fmt.Errorf("etcd: add learner %s: cluster version not decided: %w", name, ctx.Err())
		case <-time.After(addRetryMin):
		}
	}
	for wait := addRetryMin; ; wait = min(2*wait, addRetryMax) {
		resp, err := m.client.MemberAddAsLearner(ctx, []string{peerURL})
		if err == nil {
			m.awaitMembershipSpread(ctx, resp.Member.ID, resp.Members)
			return resp.Member.ID, initialClusterOf(resp.Members, resp.Member.ID, name), nil
		}
		// etcd refuses a membership change until this member has been
		// connected to a quorum for its health interval (5s), which is
		// not yet the case just after another change or a restart.
		if !errors.Is(err, rpctypes.ErrUnhealthy) {
			return 0, "", fmt.Errorf("etcd: add learner %s at %s: %w", name, peerURL, err)
		}
		select {
		case <-ctx.Done():
			return 0, "", fmt.Errorf("etcd: add learner %s at %s: %w (last: %w)", name, peerURL, ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

// Retry delays of AddLearner while etcd calls the cluster unhealthy.
const (
	addRetryMin = 100 * time.Millisecond
	addRetryMax = 2 * time.Second
)

// initialClusterOf writes name=peerURL for every member, naming the new
// one, which has no name until it starts. Another member added but never
// started is listed without a name, as etcd itself would.
func initialClusterOf(members []*etcdserverpb.Member, newID uint64, newName string) string {
	var parts []string
	for _, mb := range members {
		n := mb.Name
		if mb.ID == newID {
			n = newName
		}
		for _, u := range mb.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ",")
}

// countRoles counts voters and the learners that have started (have a
// name): a learner added but never started cannot catch up, and counting it
// would promote towards a number of voters that never comes.
func countRoles(members []*etcdserverpb.Member) (voters, learners int) {
	for _, mb := range members {
		switch {
		case !mb.IsLearner:
			voters++
		case mb.Name != "":
			learners++
		}
	}
	return voters, learners
}

// spreadTimeout bounds awaitMembershipSpread.
const spreadTimeout = 10 * time.Second

// awaitMembershipSpread waits until every other started member that
// answers on its peer port lists the new member. A joiner reads the
// membership from the first peer that answers (in URL order) and refuses to
// start ("member count is unequal") if that peer, say a learner, has not
// applied the add yet. A peer that does not answer is skipped: the joiner
// skips it too. The wait is best effort: after spreadTimeout the add stands
// and the joiner may still succeed through another peer.
func (m *Member) awaitMembershipSpread(ctx context.Context, newID uint64, members []*etcdserverpb.Member) {
	if m.peerHTTP == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, spreadTimeout)
	defer cancel()
	self := m.ID()
	for _, mb := range members {
		if mb.ID == self || mb.ID == newID || mb.Name == "" || len(mb.PeerURLs) == 0 {
			continue
		}
		for {
			listed, answered := m.peerLists(ctx, mb.PeerURLs[0], newID)
			if listed || !answered {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// peerLists asks a peer for its membership (the /members endpoint joiners
// read) and reports whether it lists id, and whether it answered at all.
func (m *Member) peerLists(ctx context.Context, peerURL string, id uint64) (listed, answered bool) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(peerURL, "/")+"/members", nil)
	if err != nil {
		return false, false
	}
	resp, err := m.peerHTTP.Do(req)
	if err != nil {
		return false, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, false
	}
	var ms []struct {
		ID uint64 `json:"id"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ms); err != nil {
		return false, false
	}
	for _, x := range ms {
		if x.ID == id {
			return true, true
		}
	}
	return false, true
}
