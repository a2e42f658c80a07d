package gateway

import (
	"context"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/election"
)

// CreateClusterJoinToken creates a one-time replica join token
// (enrollment.Service.CreateClusterJoinToken).
func (g *Gateway) CreateClusterJoinToken(ctx context.Context, p messages.Principal, req messages.CreateClusterJoinTokenRequest) (*messages.CreatedJoinToken, error) {
	return g.enroll.CreateClusterJoinToken(ctx, p, req)
}

// JoinReplica admits a new replica as an etcd learner
// (enrollment.Service.JoinReplica).
func (g *Gateway) JoinReplica(ctx context.Context, req messages.ReplicaJoinRequest, source string) (*messages.ReplicaJoinResponse, error) {
	return g.enroll.JoinReplica(ctx, req, source)
}

// ClusterMembers lists the replicas (enrollment.Service.ClusterMembers),
// marking the one that owns the periodic loops.
func (g *Gateway) ClusterMembers(ctx context.Context) ([]messages.ClusterMember, error) {
	ms, err := g.enroll.ClusterMembers(ctx)
	if err != nil {
		return nil, err
	}
	// This replica's copy, like the member list: it answers without quorum.
	owner, err := election.CurrentOwner(ctx, g.st.Client(), "")
	if err != nil {
		g.log.Warn("read the loop owner", "err", err)
	}
	for i := range ms {
		ms[i].LoopOwner = owner != "" && ms[i].Name == owner
	}
	return ms, nil
}

// RemoveClusterMember takes a replica out of the cluster
// (enrollment.Service.RemoveClusterMember).
func (g *Gateway) RemoveClusterMember(ctx context.Context, ref string, force bool) (*messages.ClusterMember, error) {
	return g.enroll.RemoveClusterMember(ctx, ref, force)
}
