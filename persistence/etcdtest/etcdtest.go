// Package etcdtest starts real multi-member embedded etcd clusters on
// loopback for tests of other packages (persistence/etcd's own tests keep
// their internal helpers). Members use mutual-TLS peer listeners under a
// throwaway CA, exactly as replicas do. It is imported by tests only.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/security"
)

// Cluster is one test's cluster. Members are closed when the test ends.
type Cluster struct {
	t      testing.TB
	dir    string
	ca     *security.CA
	caFile string

	mu      sync.Mutex
	members map[string]*etcd.Member
	cfgs    map[string]etcd.Config
}

// Start3 starts a cluster of three voters named a, b and c.
func Start3(t testing.TB) *Cluster {
	t.Helper()
	c := New(t)
	a := c.First("a")
	c.Join(a, "b")
	c.Join(a, "c")
	c.PromoteAll(a)
	return c
}

// New returns an empty cluster.
func New(t testing.TB) *Cluster {
	t.Helper()
	dir := t.TempDir()
	ca, err := security.NewCA("etcdtest", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, dir: dir, ca: ca, caFile: caFile, members: map[string]*etcd.Member{}, cfgs: map[string]etcd.Config{}}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, m := range c.members {
			if m != nil {
				m.Close()
			}
		}
	})
	return c
}

// Dir is the cluster's scratch directory.
func (c *Cluster) Dir() string { return c.dir }

// Config is a fresh member config for name on a free loopback port.
func (c *Cluster) Config(name string) etcd.Config {
	c.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	url := "https://" + l.Addr().String()
	l.Close()
	certPEM, keyPEM, err := c.ca.IssueReplicaPeerCert(name, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		c.t.Fatal(err)
	}
	d := filepath.Join(c.dir, "pki-"+name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		c.t.Fatal(err)
	}
	p := &etcd.PeerTLS{CertFile: filepath.Join(d, "peer.pem"), KeyFile: filepath.Join(d, "peer.key"), CAFile: c.caFile}
	if err := os.WriteFile(p.CertFile, certPEM, 0o600); err != nil {
		c.t.Fatal(err)
	}
	if err := security.WriteKeyFile(p.KeyFile, keyPEM); err != nil {
		c.t.Fatal(err)
	}
	return etcd.Config{DataDir: filepath.Join(c.dir, name), Name: name, PeerURL: url, PeerTLS: p, StartTimeout: time.Minute}
}

// Start starts a member from cfg and keeps it, to restart it later.
func (c *Cluster) Start(cfg etcd.Config) *etcd.Member {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", cfg.Name, err)
	}
	c.mu.Lock()
	c.members[cfg.Name], c.cfgs[cfg.Name] = m, cfg
	c.mu.Unlock()
	return m
}

// First starts the first member of the cluster.
func (c *Cluster) First(name string) *etcd.Member {
	c.t.Helper()
	return c.Start(c.Config(name))
}

// Join adds name as a learner through via and starts it.
func (c *Cluster) Join(via *etcd.Member, name string) *etcd.Member {
	c.t.Helper()
	cfg := c.Config(name)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, initial, err := via.AddLearner(ctx, name, cfg.PeerURL)
	if err != nil {
		c.t.Fatalf("add learner %s: %v", name, err)
	}
	cfg.Join = &etcd.Join{InitialCluster: initial}
	return c.Start(cfg)
}

// PromoteAll promotes learners through via until the promotion policy has
// nothing left to do.
func (c *Cluster) PromoteAll(via *etcd.Member) {
	c.t.Helper()
	testutil.EventuallyReport(c.t, 2*time.Minute, 50*time.Millisecond, "every learner promoted", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		name, err := via.PromoteOne(ctx)
		if err != nil && !errors.Is(err, etcd.ErrLearnerNotReady) {
			c.t.Fatalf("promote: %v", err)
		}
		return err == nil && name == "", fmt.Sprint(err)
	})
}

// Member is the running member name, nil when it is stopped.
func (c *Cluster) Member(name string) *etcd.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[name]
}

// Names lists the members ever started, sorted.
func (c *Cluster) Names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.cfgs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Stop closes a member; its data dir stays for Restart. To the other members
// and to leases it is a dead process: nothing it held is released early.
func (c *Cluster) Stop(name string) {
	c.mu.Lock()
	m := c.members[name]
	c.members[name] = nil
	c.mu.Unlock()
	if m != nil {
		m.Close()
	}
}

// Restart starts a stopped member again on its data dir.
func (c *Cluster) Restart(name string) *etcd.Member {
	c.t.Helper()
	c.mu.Lock()
	cfg := c.cfgs[name]
	c.mu.Unlock()
	cfg.Join = nil
	return c.Start(cfg)
}
