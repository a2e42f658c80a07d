package etcd

import (
	"errors"
	"fmt"
)

// Sentinels of the membership layer; callers match them with errors.Is.
var (
	// ErrBadPeerURL reports a peer URL this package will not serve: plain
	// http (Raft traffic in clear text), an unknown scheme, https without
	// PeerTLS, or an advertise URL of another scheme than the listener.
	ErrBadPeerURL = errors.New("etcd: bad peer url")
	// ErrBadJoin reports join settings that cannot start a member.
	ErrBadJoin = errors.New("etcd: bad join settings")
	// ErrPeerURLRequired reports a restart without a peer listener of a
	// member whose cluster has other members: on its unix socket no peer
	// could reach it.
	ErrPeerURLRequired = errors.New("etcd: member of a multi-member cluster needs a peer listener")
	// ErrLearnerNotReady reports learners that are not yet caught up with
	// the leader; promotion is retried later, it is not a failure.
	ErrLearnerNotReady = errors.New("etcd: learner not yet in sync with the leader")
	// ErrNoQuorum is the cause of a Member.QuorumContext that ended: the
	// member lost its leader, so nothing that needs consensus can finish.
	ErrNoQuorum = errors.New("etcd: no quorum: this member knows no leader")
)

// Sentinels of member removal.
var (
	// ErrMemberNotFound reports a removal of a member the cluster does not
	// have (or no longer has).
	ErrMemberNotFound = errors.New("etcd: no such member")
	// ErrQuorumAtRisk reports a removal refused because the voters left
	// would not hold a quorum of healthy members; *QuorumError says more.
	ErrQuorumAtRisk = errors.New("etcd: removal would leave the cluster below quorum")
	// ErrLastVoter reports a removal of the only voter, which would end the
	// cluster; no force overrides it.
	ErrLastVoter = errors.New("etcd: cannot remove the only voter")
	// ErrRemoved reports that this member was removed from its cluster:
	// it stopped, and its data dir cannot serve again.
	ErrRemoved = errors.New("etcd: this member was removed from the cluster")
)

// QuorumError is ErrQuorumAtRisk with its figures: after the removal
// Voters would remain, of which Healthy answer now, and Needed is their
// quorum.
type QuorumError struct {
	Voters, Healthy, Needed int
}

func (e *QuorumError) Error() string {
	return fmt.Sprintf("%v: %d voters would remain, %d of them healthy, quorum needs %d", ErrQuorumAtRisk, e.Voters, e.Healthy, e.Needed)
}

// Is matches ErrQuorumAtRisk.
func (e *QuorumError) Is(target error) bool { return target == ErrQuorumAtRisk }
