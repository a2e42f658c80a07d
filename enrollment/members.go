package enrollment

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
)

// RemoveClusterMember takes a replica out of the cluster. ref names it by
// its name, its member id (hex, as listed) or its peer address
// (HOST:PORT, or the whole https:// peer URL): a member added by a join
// but never started has no name. A voter is removed only if the voters
// left keep a quorum of healthy members, unless force (quorum_at_risk);
// the only voter never (last_voter). The replica's row goes after the
// member, with the rows of a join at that peer URL; a removed replica that
// is still running stops by itself.
func (s *Service) RemoveClusterMember(ctx context.Context, ref string, force bool) (*messages.ClusterMember, error) {
	if s.cfg.Membership == nil {
		return nil, errJoinUnavailable
	}
	members, err := s.ClusterMembers(ctx)
	if err != nil {
		return nil, err
	}
	target := findMember(members, ref)
	if target == nil {
		return nil, messages.NotFound("member", ref)
	}
	var id uint64
	if _, err := fmt.Sscanf(target.ID, "%x", &id); err != nil {
		return nil, fmt.Errorf("member id %q: %w", target.ID, err)
	}
	err = s.cfg.Membership.Remove(ctx, id, force)
	var qe *etcd.QuorumError
	switch {
	case errors.As(err, &qe):
		return nil, &messages.Error{Kind: messages.KindConflict, Code: "quorum_at_risk",
			Message: fmt.Sprintf("removing %s would leave %d voters of which only %d are healthy, below their quorum of %d; "+
				"bring a voter back or remove with force", displayName(target), qe.Voters, qe.Healthy, qe.Needed),
			Details: map[string]any{"member": displayName(target), "voters_after": qe.Voters, "healthy_after": qe.Healthy, "quorum": qe.Needed}}
	case errors.Is(err, etcd.ErrLastVoter):
		return nil, &messages.Error{Kind: messages.KindConflict, Code: "last_voter",
			Message: displayName(target) + " is the only voter: removing it would end the cluster", Details: map[string]any{"member": displayName(target)}}
	case errors.Is(err, etcd.ErrMemberNotFound):
		return nil, messages.NotFound("member", ref)
	case err != nil:
		return nil, fmt.Errorf("remove member %s: %w", displayName(target), err)
	}
	var names []string
	rows, err := s.cfg.Store.ListReplicas(ctx)
	if err == nil {
		for _, r := range rows {
			if r.Name == target.Name || target.PeerURL != "" && samePeer(r.PeerURL, target.PeerURL) {
				names = append(names, r.Name)
			}
		}
		err = s.cfg.Store.ForgetReplicas(ctx, names...)
	}
	if err != nil {
		// The member is gone; a row left behind only lists URLs nobody
		// answers at, and a join with its name takes it over after the
		// join grace.
		s.cfg.Log.Warn("member removed; its replica row stays", "member", displayName(target), "err", err)
	}
	s.cfg.Log.Warn("replica removed from the cluster", "member", displayName(target), "id", target.ID, "role", target.Role,
		"peer_url", target.PeerURL, "force", force)
	return target, nil
}

// findMember matches ref against names first, then ids, then peer URLs.
func findMember(ms []messages.ClusterMember, ref string) *messages.ClusterMember {
	if ref == "" {
		return nil
	}
	for i := range ms {
		if ms[i].Name == ref {
			return &ms[i]
		}
	}
	for i := range ms {
		if strings.EqualFold(ms[i].ID, ref) {
			return &ms[i]
		}
	}
	peer := ref
	if !strings.Contains(peer, "://") {
		if _, _, err := net.SplitHostPort(peer); err != nil {
			return nil
		}
		peer = "https://" + peer
	}
	for i := range ms {
		if ms[i].PeerURL != "" && samePeer(ms[i].PeerURL, peer) {
			return &ms[i]
		}
	}
	return nil
}

// displayName names a member in messages: its name, or its peer URL and
// id when it never started.
func displayName(m *messages.ClusterMember) string {
	if m.Name != "" {
		return m.Name
	}
	return fmt.Sprintf("the member never started at %s (id %s)", m.PeerURL, m.ID)
}
