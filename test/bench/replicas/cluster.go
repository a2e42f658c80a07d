package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/security"
)

// cluster is an etcd cluster of embedded members in this process, joined
// and promoted by persistence/etcd as otherix-api replicas are: mutual TLS
// between peers under a cluster CA, learners first.
type cluster struct {
	dir     string
	ca      *security.CA
	caFile  string
	members []*etcd.Member
}

// newCluster starts n members (n odd) and waits until all are voters.
func newCluster(ctx context.Context, n int) (*cluster, error) {
	dir, err := os.MkdirTemp("", "otherix-bench-replicas-")
	if err != nil {
		return nil, err
	}
	ca, err := security.NewCA("bench", time.Now())
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, ca: ca, caFile: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(c.caFile, ca.CertPEM(), 0o600); err != nil {
		return nil, err
	}
	first, err := c.start(ctx, "m1", nil)
	if err != nil {
		c.close()
		return nil, err
	}
	c.members = append(c.members, first)
	for i := 2; i <= n; i++ {
		m, _, err := c.join(ctx, fmt.Sprintf("m%d", i))
		if err != nil {
			c.close()
			return nil, err
		}
		c.members = append(c.members, m)
	}
	if err := c.promoteAll(ctx); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// start starts member name on a free loopback peer port, joining through
// join's initial cluster when set.
func (c *cluster) start(ctx context.Context, name string, join *etcd.Join) (*etcd.Member, error) {
	cfg, err := c.config(name)
	if err != nil {
		return nil, err
	}
	cfg.Join = join
	return etcd.Start(ctx, cfg)
}

func (c *cluster) config(name string) (etcd.Config, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return etcd.Config{}, err
	}
	url := "https://" + l.Addr().String()
	l.Close()
	certPEM, keyPEM, err := c.ca.IssueReplicaPeerCert(name, []string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		return etcd.Config{}, err
	}
	d := filepath.Join(c.dir, "pki-"+name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return etcd.Config{}, err
	}
	tls := &etcd.PeerTLS{CertFile: filepath.Join(d, "peer.pem"), KeyFile: filepath.Join(d, "peer.key"), CAFile: c.caFile}
	if err := os.WriteFile(tls.CertFile, certPEM, 0o600); err != nil {
		return etcd.Config{}, err
	}
	if err := security.WriteKeyFile(tls.KeyFile, keyPEM); err != nil {
		return etcd.Config{}, err
	}
	return etcd.Config{DataDir: filepath.Join(c.dir, name), Name: name, PeerURL: url, PeerTLS: tls,
		StartTimeout: 2 * time.Minute}, nil
}

// join adds name as a learner through the first member and starts it;
// added is when AddLearner returned.
func (c *cluster) join(ctx context.Context, name string) (m *etcd.Member, added time.Time, err error) {
	cfg, err := c.config(name)
	if err != nil {
		return nil, added, err
	}
	_, initial, err := c.members[0].AddLearner(ctx, name, cfg.PeerURL)
	if err != nil {
		return nil, added, fmt.Errorf("add learner %s: %w", name, err)
	}
	added = time.Now()
	cfg.Join = &etcd.Join{InitialCluster: initial}
	m, err = etcd.Start(ctx, cfg)
	return m, added, err
}

// promoteAll promotes learners through the first member until none is left
// that the odd-voters rule would promote.
func (c *cluster) promoteAll(ctx context.Context) error {
	for {
		learners := 0
		for _, m := range c.members {
			if m.IsLearner() {
				learners++
			}
		}
		if learners == 0 || (len(c.members)%2 == 0 && learners == 1) {
			return nil
		}
		name, err := c.members[0].PromoteOne(ctx)
		if err != nil && !errors.Is(err, etcd.ErrLearnerNotReady) {
			return fmt.Errorf("promote: %w", err)
		}
		if name == "" {
			// Not ready yet, or promoted but not yet applied everywhere.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond): // etcd's own readiness, polled
			}
		}
	}
}

func (c *cluster) close() {
	for i := len(c.members) - 1; i >= 0; i-- {
		c.members[i].Close()
	}
	os.RemoveAll(c.dir)
}
