package server

import (
	"context"

	"github.com/otherix/otherix/messages"
)

// fakeCluster is the replica side of fakeCP: replica tokens and joins are
// tested against real etcd members in enrollment and end to end.
type fakeCluster struct{}

func (fakeCluster) CreateClusterJoinToken(context.Context, messages.Principal, messages.CreateClusterJoinTokenRequest) (*messages.CreatedJoinToken, error) {
	return nil, messages.Errorf(messages.KindUnavailable, "replica_join_unavailable", "not in the fake")
}

func (fakeCluster) JoinReplica(context.Context, messages.ReplicaJoinRequest, string) (*messages.ReplicaJoinResponse, error) {
	return nil, messages.Errorf(messages.KindUnavailable, "replica_join_unavailable", "not in the fake")
}

func (fakeCluster) ClusterMembers(context.Context) ([]messages.ClusterMember, error) {
	return []messages.ClusterMember{{Name: "otherix", ID: "1", Role: "voter", IsLeader: true, Healthy: true}}, nil
}
