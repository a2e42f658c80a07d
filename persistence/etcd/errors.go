package etcd

import "errors"

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
