package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// MaxReplicaURLs bounds the replica lists a heartbeat answer and GET
// /v1/cluster/endpoints carry: more than any control plane has (etcd advises
// at most seven voters), so the answer stays small whatever the rows hold.
const MaxReplicaURLs = 16

// maxReplicaURLLen bounds one URL of those lists; a replica records
// scheme://host:port, far shorter.
const maxReplicaURLLen = 512

// replicaCacheTTL is how long heartbeats reuse the list of replicas' agent
// URLs: a joined or removed replica reaches agents within it.
const replicaCacheTTL = 10 * time.Second

// replicaRefreshTimeout bounds a refresh of that list: without quorum the
// read waits, and a heartbeat must not wait with it (the stale list is kept).
const replicaRefreshTimeout = time.Second

// ClusterEndpoints lists the API URLs of the replicas that serve, for any
// authenticated caller: what clients fail over between.
func (g *Gateway) ClusterEndpoints(ctx context.Context) (*messages.ClusterEndpoints, error) {
	rows, err := g.st.ServingReplicas(ctx)
	if err != nil {
		return nil, err
	}
	return &messages.ClusterEndpoints{APIURLs: replicaURLs(rows, func(r *messages.Replica) string { return r.APIURL })}, nil
}

// replicaURLs picks one URL of each row, skipping empty and oversized ones,
// at most MaxReplicaURLs, never nil.
func replicaURLs(rows []*messages.Replica, pick func(*messages.Replica) string) []string {
	out := []string{}
	for _, r := range rows {
		if u := pick(r); u != "" && len(u) <= maxReplicaURLLen && len(out) < MaxReplicaURLs {
			out = append(out, u)
		}
	}
	return out
}

// replicaCache holds the replicas' agent URLs heartbeats answer with. The
// zero value is ready.
type replicaCache struct {
	mu         sync.Mutex
	urls       []string
	until      time.Time
	refreshing bool
}

// agentURLs returns the cached list, refreshing it when it is older than
// replicaCacheTTL. One heartbeat refreshes while the others answer with the
// list as it is; a failed refresh keeps the old list (agents keep what they
// had) and is not retried before the TTL.
func (c *replicaCache) agentURLs(ctx context.Context, st *store.Store) []string {
	c.mu.Lock()
	if c.refreshing || time.Now().Before(c.until) {
		urls := c.urls
		c.mu.Unlock()
		return urls
	}
	c.refreshing = true
	c.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, replicaRefreshTimeout)
	defer cancel()
	rows, err := st.ServingReplicas(rctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshing, c.until = false, time.Now().Add(replicaCacheTTL)
	if err == nil {
		c.urls = replicaURLs(rows, func(r *messages.Replica) string { return r.AgentURL })
	}
	return c.urls
}
