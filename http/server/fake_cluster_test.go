package server

import (
	"context"
	"time"

	"github.com/otherix/otherix/messages"
)

// fakeCluster is the replica side of fakeCP: replica tokens and joins are
// tested against real etcd members in enrollment and end to end.
type fakeCluster struct{}

func (fakeCluster) CreateClusterJoinToken(_ context.Context, p messages.Principal, req messages.CreateClusterJoinTokenRequest) (*messages.CreatedJoinToken, error) {
	if req.Kind != "replica" {
		return nil, messages.Invalid("kind", `must be "replica"`)
	}
	now := time.Now().UTC()
	return &messages.CreatedJoinToken{Token: "otxr_fake", JoinToken: messages.JoinTokenView{ID: "fakeid", Kind: "replica",
		CreatedBy: p.UserID, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}}, nil
}

func (fakeCluster) JoinReplica(context.Context, messages.ReplicaJoinRequest, string) (*messages.ReplicaJoinResponse, error) {
	return nil, messages.Errorf(messages.KindUnavailable, "replica_join_unavailable", "not in the fake")
}

func (fakeCluster) RemoveClusterMember(_ context.Context, ref string, force bool) (*messages.ClusterMember, error) {
	switch {
	case ref == "r2" && !force:
		return nil, messages.Errorf(messages.KindConflict, "quorum_at_risk", "below quorum")
	case ref == "r2" || ref == "r3":
		return &messages.ClusterMember{Name: ref, ID: "2", Role: "voter"}, nil
	}
	return nil, messages.NotFound("member", ref)
}

func (fakeCluster) ClusterMembers(context.Context) ([]messages.ClusterMember, error) {
	return []messages.ClusterMember{{Name: "otherix", ID: "1", Role: "voter", IsLeader: true, Healthy: true}}, nil
}

func (fakeCluster) ClusterEndpoints(context.Context) (*messages.ClusterEndpoints, error) {
	return &messages.ClusterEndpoints{APIURLs: []string{"https://r1.example:7080", "https://r2.example:7080"}}, nil
}
