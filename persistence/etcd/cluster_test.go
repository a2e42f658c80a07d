//go:build etcd

package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/security"
)

// testCluster holds the CA and the members of one test's cluster. Members
// are closed at the end of the test, in any state.
type testCluster struct {
	t      *testing.T
	dir    string
	ca     *security.CA
	caFile string
	byName map[string]*Member
	// byName2cfg keeps each member's config, to restart it.
	byName2cfg map[string]Config
}

func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	dir := t.TempDir()
	ca, err := security.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, dir: dir, ca: ca, caFile: caFile, byName: map[string]*Member{}, byName2cfg: map[string]Config{}}
	t.Cleanup(func() {
		for _, m := range c.byName {
			if m != nil {
				m.Close()
			}
		}
	})
	return c
}

// peerURL returns an https URL on a loopback port free at the time of the
// call.
func peerURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "https://" + l.Addr().String()
}

// peerTLS writes a replica peer certificate for name, signed by ca.
func (c *testCluster) peerTLS(ca *security.CA, name string) *PeerTLS {
	c.t.Helper()
	certPEM, keyPEM, err := ca.IssueReplicaPeerCert(name, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.writePair(name, certPEM, keyPEM)
}

func (c *testCluster) writePair(name string, certPEM, keyPEM []byte) *PeerTLS {
	c.t.Helper()
	d := filepath.Join(c.dir, "pki-"+name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		c.t.Fatal(err)
	}
	p := &PeerTLS{CertFile: filepath.Join(d, "peer.pem"), KeyFile: filepath.Join(d, "peer.key"), CAFile: c.caFile}
	if err := os.WriteFile(p.CertFile, certPEM, 0o600); err != nil {
		c.t.Fatal(err)
	}
	if err := security.WriteKeyFile(p.KeyFile, keyPEM); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *testCluster) config(name, url string) Config {
	return Config{
		DataDir:      filepath.Join(c.dir, name),
		Name:         name,
		PeerURL:      url,
		PeerTLS:      c.peerTLS(c.ca, name),
		StartTimeout: time.Minute,
	}
}

func (c *testCluster) start(cfg Config) *Member {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", cfg.Name, err)
	}
	c.byName[cfg.Name] = m
	c.byName2cfg[cfg.Name] = cfg
	return m
}

// first starts the first member of a TLS cluster.
func (c *testCluster) first(name string) *Member {
	c.t.Helper()
	return c.start(c.config(name, peerURL(c.t)))
}

// join adds name as a learner through via and starts it.
func (c *testCluster) join(via *Member, name string) *Member {
	c.t.Helper()
	cfg := c.config(name, peerURL(c.t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, initial, err := via.AddLearner(ctx, name, cfg.PeerURL)
	if err != nil {
		c.t.Fatalf("add learner %s: %v", name, err)
	}
	// The joiner reads the membership from any peer: every running one
	// must already list it, or the joiner may refuse to start.
	for other, m := range c.byName {
		if m == nil {
			continue
		}
		if listed, _ := via.peerLists(ctx, c.byName2cfg[other].PeerURL, id); !listed {
			c.t.Fatalf("%s does not list %s yet when AddLearner returns", other, name)
		}
	}
	cfg.Join = &Join{InitialCluster: initial}
	return c.start(cfg)
}

func (c *testCluster) close(name string) {
	c.byName[name].Close()
	c.byName[name] = nil
}

// promote calls PromoteOne until it promotes someone or the deadline
// passes; ErrLearnerNotReady is the only error it tolerates.
func promote(t *testing.T, via *Member) string {
	t.Helper()
	var got string
	testutil.EventuallyReport(t, time.Minute, 50*time.Millisecond, "a learner promoted", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		name, err := via.PromoteOne(ctx)
		if err != nil && !errors.Is(err, ErrLearnerNotReady) {
			t.Fatalf("promote: %v", err)
		}
		got = name
		return name != "", fmt.Sprint(err)
	})
	return got
}

func roles(t *testing.T, m *Member) map[string]MemberInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := m.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]MemberInfo{}
	for _, mi := range list {
		out[mi.Name] = mi
	}
	return out
}

func TestPromotionTarget(t *testing.T) {
	cases := []struct{ voters, learners, want int }{
		{1, 0, 1}, {1, 1, 1}, {1, 2, 3}, {2, 1, 3}, {3, 0, 3}, {3, 1, 3}, {3, 2, 5}, {4, 0, 4}, {4, 1, 5}, {2, 0, 2},
	}
	for _, c := range cases {
		if got := promotionTarget(c.voters, c.learners); got != c.want {
			t.Errorf("promotionTarget(%d voters, %d learners) = %d, want %d", c.voters, c.learners, got, c.want)
		}
	}
}

// TestJoinAndPromoteToThree grows a TLS cluster from one member to three
// voters: the second waits as a learner (two voters would need both to
// answer), serves nothing of its own, and is promoted once the third
// arrives; then the membership lists every member healthy, one leader.
func TestJoinAndPromoteToThree(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	ctx := context.Background()
	if _, err := a.Client().Put(ctx, "/otherix/probe", "v1"); err != nil {
		t.Fatal(err)
	}
	b := c.join(a, "b")
	if !b.IsLearner() {
		t.Fatal("b joined as a voter, want a learner")
	}
	if a.IsLearner() {
		t.Fatal("a is a learner")
	}
	if a.ClusterID() == 0 || b.ClusterID() != a.ClusterID() {
		t.Fatalf("cluster ids a %x, b %x", a.ClusterID(), b.ClusterID())
	}
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	if err := b.WaitVoter(short, 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitVoter on a learner = %v, want the deadline", err)
	}
	voter := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		voter <- b.WaitVoter(ctx, 10*time.Millisecond)
	}()
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, "the learner has the data", func() bool {
		r, err := b.Client().Get(ctx, "/otherix/probe", clientv3.WithSerializable())
		return err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "v1"
	})
	// One voter and one learner: promoting would make two voters.
	for i := 0; i < 3; i++ {
		if name, err := a.PromoteOne(ctx); name != "" || err != nil {
			t.Fatalf("PromoteOne with 1 voter + 1 learner = %q, %v; want nothing", name, err)
		}
	}
	if got := roles(t, a)["b"]; got.Role != RoleLearner || got.Note != NoteWaitsForOddVoters {
		t.Fatalf("b = %+v, want a learner waiting for an odd number of voters", got)
	}

	adding := time.Now()
	cm := c.join(a, "c")
	joined := time.Now()
	first := promote(t, a)
	firstAt := time.Since(joined)
	second := promote(t, a)
	t.Logf("measure: third member added and started in %s; then first promotion after %s, second after %s",
		joined.Sub(adding), firstAt, time.Since(joined))
	// Name order, unless b still lags when c is ready.
	if !(first == "b" && second == "c" || first == "c" && second == "b") {
		t.Fatalf("promoted %q then %q, want b and c", first, second)
	}
	// Each member applies the promotion from its own log.
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "promoted members see themselves as voters", func() bool {
		return !b.IsLearner() && !cm.IsLearner()
	})
	if err := <-voter; err != nil {
		t.Fatalf("WaitVoter after promotion: %v", err)
	}
	if name, err := a.PromoteOne(ctx); name != "" || err != nil {
		t.Fatalf("PromoteOne with 3 voters = %q, %v; want nothing", name, err)
	}

	var leaders int
	got := map[string]MemberInfo{}
	testutil.EventuallyReport(t, 30*time.Second, 50*time.Millisecond, "three healthy voters seen from c", func() (bool, string) {
		got = roles(t, cm)
		leaders = 0
		for _, mi := range got {
			if mi.IsLeader {
				leaders++
			}
			if !mi.Healthy || mi.Role != RoleVoter {
				return false, fmt.Sprintf("%+v", got)
			}
		}
		return len(got) == 3 && leaders == 1, fmt.Sprintf("%+v", got)
	})
	if !got["c"].Self || got["a"].Self || got["a"].PeerURL != c.byName["a"].cfg.PeerURL {
		t.Errorf("members from c = %+v", got)
	}

	// A member that stops is reported unhealthy by the others.
	c.close("b")
	testutil.EventuallyReport(t, 30*time.Second, 50*time.Millisecond, "b unhealthy", func() (bool, string) {
		r := roles(t, a)
		return !r["b"].Healthy && r["a"].Healthy && r["c"].Healthy, fmt.Sprintf("%+v", r)
	})
}

// TestFourthWaitsForFifth: with three voters a fourth member stays a
// learner, listed as waiting; a fifth makes both voters, one at a time.
func TestFourthWaitsForFifth(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	c.join(a, "b")
	c.join(a, "c")
	promote(t, a)
	promote(t, a)
	d := c.join(a, "d")
	// Let d catch up fully, so a refusal below is the policy, not lag.
	ctx := context.Background()
	put, err := a.Client().Put(ctx, "/otherix/probe", "x")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, "d caught up", func() bool {
		r, err := d.Client().Get(ctx, "/otherix/probe", clientv3.WithSerializable())
		return err == nil && r.Header.Revision >= put.Header.Revision
	})
	for i := 0; i < 3; i++ {
		if name, err := a.PromoteOne(ctx); name != "" || err != nil {
			t.Fatalf("PromoteOne with 3 voters + 1 learner = %q, %v; want nothing", name, err)
		}
	}
	if got := roles(t, a)["d"]; got.Role != RoleLearner || got.Note != NoteWaitsForOddVoters || !d.IsLearner() {
		t.Fatalf("d = %+v, want a learner waiting", got)
	}
	e := c.join(a, "e")
	// Four voters and one learner is even: the second promotion follows
	// at once. Name order, unless d lags when e is ready.
	p1, p2 := promote(t, a), promote(t, a)
	if !(p1 == "d" && p2 == "e" || p1 == "e" && p2 == "d") {
		t.Fatalf("promoted %q then %q, want d and e", p1, p2)
	}
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "d and e see themselves as voters", func() bool {
		return !d.IsLearner() && !e.IsLearner()
	})
	for name, mi := range roles(t, a) {
		if mi.Role != RoleVoter {
			t.Errorf("%s is %s", name, mi.Role)
		}
	}
}

// TestRunPromoter runs the loop as the API will: a joined pair of learners
// ends as voters without anyone calling PromoteOne, and the loop returns
// when its context ends.
func TestRunPromoter(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.RunPromoter(ctx, PromoterOptions{Interval: 50 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	}()
	b := c.join(a, "b")
	cm := c.join(a, "c")
	testutil.Eventually(t, time.Minute, 50*time.Millisecond, "b and c voters", func() bool {
		return !b.IsLearner() && !cm.IsLearner()
	})
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("RunPromoter did not return after its context ended")
	}
}

// peerGet dials a peer listener with the given client certificate (none
// when cert is nil) and reports whether /version answered.
func peerGet(t *testing.T, peerURL string, roots *security.CA, cert *tls.Certificate) error {
	t.Helper()
	return peerGetTLS(t, peerURL, &tls.Config{RootCAs: roots.Pool(), MinVersion: tls.VersionTLS13}, cert)
}

func peerGetTLS(t *testing.T, peerURL string, tc *tls.Config, cert *tls.Certificate) error {
	t.Helper()
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := cl.Get(peerURL + "/version")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func loadPair(t *testing.T, p *PeerTLS) *tls.Certificate {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &kp
}

// TestPeerPortRefusesNonReplicas: the peer listener takes only replica
// certificates of our CA. Each refused certificate would pass etcd's other
// checks (chain, client usage, its SAN matching 127.0.0.1), so only the
// replica check can refuse it: a node certificate for the node named
// "localhost", the control plane's client certificate, a replica
// certificate from another CA; and no certificate at all.
func TestPeerPortRefusesNonReplicas(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	url := c.byName["a"].cfg.PeerURL
	now := time.Now()

	replica := loadPair(t, c.peerTLS(c.ca, "b"))
	if err := peerGet(t, url, c.ca, replica); err != nil {
		t.Fatalf("a replica certificate was refused: %v", err)
	}
	tls12 := &tls.Config{RootCAs: c.ca.Pool(), MaxVersion: tls.VersionTLS12}
	if err := peerGetTLS(t, url, tls12, replica); err == nil {
		t.Error("the peer port accepted TLS 1.2")
	}

	nodeKey, nodeCSR, err := security.NewNodeKeyAndCSR("localhost")
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, _, err := c.ca.SignNodeCSR(nodeCSR, "localhost", now, 0)
	if err != nil {
		t.Fatal(err)
	}
	nodePair := c.writePair("node-localhost", nodeCert, nodeKey)
	cp, err := c.ca.IssueClientCert(security.ControlPlaneCN, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := security.NewCA("other", now)
	if err != nil {
		t.Fatal(err)
	}
	foreign := c.peerTLS(other, "x")
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"node certificate", loadPair(t, nodePair)},
		{"control plane client certificate", &cp},
		{"replica certificate of another CA", loadPair(t, foreign)},
		{"no client certificate", nil},
	} {
		if err := peerGet(t, url, c.ca, tc.cert); err == nil {
			t.Errorf("%s: the peer port answered", tc.name)
		}
	}

	// A member presenting a node certificate cannot join either: it cannot
	// even read the membership from a's peer port.
	cfg := c.config("n", peerURL(t))
	cfg.PeerTLS = nodePair
	cfg.StartTimeout = 15 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, initial, err := a.AddLearner(ctx, "n", cfg.PeerURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Join = &Join{InitialCluster: initial}
	if m, err := Start(ctx, cfg); err == nil {
		m.Close()
		t.Fatal("a member with a node certificate joined")
	}
	if got := roles(t, a)["a"]; !got.Healthy || !got.IsLeader {
		t.Errorf("a after the refused join: %+v", got)
	}
	// The refused member stays listed as a learner that never started; a
	// replica with the right certificate can still join.
	b := c.join(a, "b")
	if !b.IsLearner() {
		t.Error("b is not a learner")
	}
}

func TestPeerURLValidated(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []Config{
		{DataDir: dir, PeerURL: "http://127.0.0.1:2380"},
		{DataDir: dir, PeerURL: "https://127.0.0.1:2380"},
		{DataDir: dir, PeerURL: "tcp://127.0.0.1:2380"},
		{DataDir: dir, PeerURL: "https://127.0.0.1:2380", AdvertisePeerURL: "unix:///x", PeerTLS: &PeerTLS{"c", "k", "ca"}},
	} {
		if _, err := Start(context.Background(), tc); !errors.Is(err, ErrBadPeerURL) {
			t.Errorf("Start(peer %q adv %q) = %v, want ErrBadPeerURL", tc.PeerURL, tc.AdvertisePeerURL, err)
		}
	}
}

// TestGrowSingleNode: a single-node install (unix-socket peer URL) is
// restarted with a peer listener, its membership follows, and a replica can
// then join it. Restarting the joined replica with join settings that no
// longer make sense works (the data dir holds the member), and restarting
// the first member without its listener is refused.
func TestGrowSingleNode(t *testing.T) {
	c := newTestCluster(t)
	ctx := context.Background()
	single := c.start(Config{DataDir: filepath.Join(c.dir, "a"), Name: "a"})
	if _, err := single.Client().Put(ctx, "/otherix/probe", "kept"); err != nil {
		t.Fatal(err)
	}
	if got := roles(t, single)["a"].PeerURL; got != "unix://"+filepath.Join(c.dir, "a", "peer.sock") {
		t.Fatalf("single-node peer url = %q, want its unix socket", got)
	}
	c.close("a")

	acfg := c.config("a", peerURL(t))
	a := c.start(acfg)
	if got := roles(t, a)["a"].PeerURL; got != acfg.PeerURL {
		t.Fatalf("peer url after restart with a listener = %q, want %q", got, acfg.PeerURL)
	}
	b := c.join(a, "b")
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, "b has the single node's data", func() bool {
		r, err := b.Client().Get(ctx, "/otherix/probe", clientv3.WithSerializable())
		return err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "kept"
	})

	bcfg := c.byName["b"].cfg
	c.close("b")
	bcfg.Join = &Join{InitialCluster: "nobody=https://127.0.0.1:1"}
	b = c.start(bcfg)
	if !b.IsLearner() {
		t.Error("b restarted as something else than the learner it was")
	}

	c.close("a")
	bare := acfg
	bare.PeerURL = ""
	bare.PeerTLS = nil
	if m, err := Start(ctx, bare); !errors.Is(err, ErrPeerURLRequired) {
		if m != nil {
			m.Close()
		}
		t.Fatalf("restart of a two-member cluster's member without a listener = %v, want ErrPeerURLRequired", err)
	}
}

// TestLeaderFailover closes the leader of three voters and measures how
// long the other two take to elect a new one and accept a write. It is a
// measurement (logged) with a generous deadline, not a timing assertion.
func TestLeaderFailover(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	c.join(a, "b")
	c.join(a, "c")
	promote(t, a)
	promote(t, a)
	var lead string
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, "a leader", func() bool {
		for name, m := range c.byName {
			if m.LeaderID() != 0 && m.LeaderID() == m.ID() {
				lead = name
				return true
			}
		}
		return false
	})
	// A crash as the followers see it: the leader's Raft node stops
	// without the leadership transfer a graceful close does.
	old := c.byName[lead].ID()
	start := time.Now()
	c.byName[lead].server.Server.HardStop()
	testutil.Eventually(t, 30*time.Second, 5*time.Millisecond, "a new leader after the crash", func() bool {
		for name, m := range c.byName {
			if name != lead && m.LeaderID() != 0 && m.LeaderID() != old {
				return true
			}
		}
		return false
	})
	t.Logf("measure: leader stopped hard; the others elected a new one after %s", time.Since(start))
	c.close(lead)
	// Bring it back, so the graceful case below also has three voters.
	c.start(c.byName2cfg[lead])
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "one leader known to all three", func() bool {
		l := c.byName["a"].LeaderID()
		for _, m := range c.byName {
			if m.LeaderID() == 0 || m.LeaderID() != l {
				return false
			}
		}
		for name, m := range c.byName {
			if m.ID() == l {
				lead = name
			}
		}
		return true
	})

	old = c.byName[lead].ID()
	leader := c.byName[lead]
	var survivors []*Member
	for name, m := range c.byName {
		if name != lead {
			survivors = append(survivors, m)
		}
	}
	c.byName[lead] = nil
	start = time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		leader.Close()
		closed <- time.Since(start)
	}()
	var survivor *Member
	testutil.Eventually(t, 30*time.Second, 5*time.Millisecond, "a new leader", func() bool {
		for _, m := range survivors {
			if m.LeaderID() != 0 && m.LeaderID() != old {
				survivor = m
				return true
			}
		}
		return false
	})
	elected := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := survivor.Client().Put(ctx, "/otherix/probe", "after"); err != nil {
		t.Fatalf("write after failover: %v", err)
	}
	written := time.Since(start)
	t.Logf("measure: leader closing; new leader after %s; first write after %s; close returned after %s", elected, written, <-closed)
}

// TestRestoreThenGrow: a data dir restored from a snapshot holds a
// single-member cluster on its unix socket; started with a peer listener it
// takes joiners, which get the restored data.
func TestRestoreThenGrow(t *testing.T) {
	c := newTestCluster(t)
	ctx := context.Background()
	src := c.start(Config{DataDir: filepath.Join(c.dir, "src"), Name: "a"})
	if _, err := src.Client().Put(ctx, "/otherix/probe", "restored"); err != nil {
		t.Fatal(err)
	}
	snap, err := src.Snapshot(ctx, filepath.Join(c.dir, "snaps"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.close("a")
	cfg := c.config("a", peerURL(t))
	if err := Restore(snap, cfg.DataDir, "a"); err != nil {
		t.Fatal(err)
	}
	a := c.start(cfg)
	if got := roles(t, a)["a"].PeerURL; got != cfg.PeerURL {
		t.Fatalf("restored member's peer url = %q, want %q", got, cfg.PeerURL)
	}
	b := c.join(a, "b")
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, "b has the restored data", func() bool {
		r, err := b.Client().Get(ctx, "/otherix/probe", clientv3.WithSerializable())
		return err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "restored"
	})
}

// TestRestoreClusterSnapshot: the newest backup of a three-member cluster
// that lost its majority, restored into a new data dir, starts as a
// single-member cluster whose revision is past every revision clients of
// the lost cluster saw (even writes taken after the snapshot), keeps the
// data of the snapshot, and grows again by joins.
func TestRestoreClusterSnapshot(t *testing.T) {
	c := newTestCluster(t)
	ctx := context.Background()
	a := c.first("a")
	c.join(a, "b")
	c.join(a, "c")
	promote(t, a)
	promote(t, a)
	b := c.byName["b"]
	if _, err := a.Client().Put(ctx, "/otherix/probe", "in the backup"); err != nil {
		t.Fatal(err)
	}
	// The backup, as the loop owner (b here) takes it, of b's own copy:
	// wait until b has applied the write (a follower may lag the leader).
	testutil.Eventually(t, 30*time.Second, 10*time.Millisecond, "b applied the probe", func() bool {
		r, err := b.Client().Get(ctx, "/otherix/probe", clientv3.WithSerializable())
		return err == nil && len(r.Kvs) == 1
	})
	snap, err := b.Snapshot(ctx, filepath.Join(c.dir, "backups"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the backup: lost with the majority, but their
	// revisions were seen by clients.
	var seen int64
	for i := 0; i < 50; i++ {
		r, err := a.Client().Put(ctx, "/otherix/after", fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		seen = r.Header.Revision
	}
	for _, n := range []string{"a", "b", "c"} {
		c.close(n)
	}

	cfg := c.config("n1", peerURL(t))
	if err := Restore(snap, cfg.DataDir, "n1"); err != nil {
		t.Fatal(err)
	}
	n1 := c.start(cfg)
	if ms := roles(t, n1); len(ms) != 1 || ms["n1"].Role != RoleVoter {
		t.Fatalf("restored members: %+v", ms)
	}
	got, err := n1.Client().Get(ctx, "/otherix/probe")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "in the backup" {
		t.Fatalf("restored probe: %v %v", got, err)
	}
	if got.Header.Revision <= seen {
		t.Fatalf("restored revision %d is not past %d, which clients of the lost cluster saw", got.Header.Revision, seen)
	}
	if r, _ := n1.Client().Get(ctx, "/otherix/after"); len(r.Kvs) != 0 {
		t.Fatalf("a write after the backup survived: %v", r.Kvs)
	}
	restoredAt := got.Header.Revision
	// The restored cluster takes as many writes to the key as the lost one
	// took after the backup; a client's compare-and-set against the
	// revision it saw of that key (a write that was lost) must still fail:
	// without the bump the last of these writes would land on that very
	// revision.
	for i := 0; i < 50; i++ {
		if _, err := n1.Client().Put(ctx, "/otherix/after", fmt.Sprint("new ", i)); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := n1.Client().Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("/otherix/after"), "=", seen)).
		Then(clientv3.OpPut("/otherix/after", "stale")).Commit()
	if err != nil || tx.Succeeded {
		t.Fatalf("compare-and-set against revision %d seen before the restore: succeeded=%v err=%v", seen, tx != nil && tx.Succeeded, err)
	}
	// History before the restore is gone: a watch from a revision seen
	// before answers compacted, so a client starts over.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	wr := <-n1.Client().Watch(wctx, "/otherix/", clientv3.WithPrefix(), clientv3.WithRev(seen))
	if wr.CompactRevision == 0 {
		t.Fatalf("watch from revision %d after the restore: %+v", seen, wr)
	}
	t.Logf("lost cluster's last revision seen %d; restored at %d", seen, restoredAt)

	// It grows again: two joiners get the restored data, three voters.
	n2 := c.join(n1, "n2")
	c.join(n1, "n3")
	promote(t, n1)
	promote(t, n1)
	testutil.Eventually(t, 30*time.Second, 20*time.Millisecond, "n2 has the restored data", func() bool {
		r, err := n2.Client().Get(ctx, "/otherix/probe", clientv3.WithSerializable())
		return err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "in the backup"
	})
	ms := roles(t, n1)
	for _, n := range []string{"n1", "n2", "n3"} {
		if ms[n].Role != RoleVoter {
			t.Fatalf("after growing: %+v", ms)
		}
	}
}

// TestSnapshotJoinerStartsOnIdleCluster: a member joining a cluster past
// 10,000 Raft entries catches up by a snapshot; with nobody writing, it
// still starts, because the promoter writes while a member has not
// published itself. Without that it hung in etcd's publish loop ("too many
// requests") until its start timed out.
func TestSnapshotJoinerStartsOnIdleCluster(t *testing.T) {
	c := newTestCluster(t)
	a := c.first("a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// More entries than etcd's snapshot count: the leader snapshots and
	// compacts its log, so a joiner must be sent the snapshot.
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 16 {
		wg.Go(func() {
			for i := next.Add(1); i <= 10100; i = next.Add(1) {
				if _, err := a.Client().Put(ctx, fmt.Sprintf("/fill/%05d", i), "x"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.RunPromoter(ctx, PromoterOptions{Interval: time.Second, Log: slog.New(slog.DiscardHandler)})
	}()
	defer func() { cancel(); <-done }()
	cfg := c.config("b", peerURL(t))
	cfg.StartTimeout = 45 * time.Second
	_, initial, err := a.AddLearner(ctx, "b", cfg.PeerURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Join = &Join{InitialCluster: initial}
	t0 := time.Now()
	b := c.start(cfg)
	t.Logf("joined by snapshot; started %s after its start began", time.Since(t0).Round(time.Millisecond))
	r, err := b.Client().Get(ctx, "/fill/10100", clientv3.WithSerializable())
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("the joiner lacks the last entry: %v", err)
	}
}
