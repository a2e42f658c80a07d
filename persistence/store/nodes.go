package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Nodes is the resource name of node rows: /otherix/nodes/<id>.
const Nodes = "nodes"

// NodeAllIndex is the index sort key that lists every node in id order.
const NodeAllIndex = "all"

// CreateNode adds a new node to t with its name guard and index key. A taken
// name fails the commit with node_name_conflict.
func CreateNode(t *Txn, n *messages.Node) *Txn {
	t.Create(Nodes, n)
	t.ClaimUnique(Nodes, "name", n.Name, n.ID)
	t.AddIndex(Nodes, NodeAllIndex, n.ID)
	return t
}

// UpdateNode adds to t the rewrite of n, guarded by the revision it was read
// at. A node's name never changes, so its guard is left as it is.
func UpdateNode(t *Txn, n *messages.Node) *Txn {
	return t.Update(Nodes, n)
}

// DeleteNode adds to t the removal of a node, its name and tunnel IP guards
// and its index key.
func DeleteNode(t *Txn, n *messages.Node) *Txn {
	t.Delete(Nodes, n)
	t.ReleaseUnique(Nodes, "name", n.Name)
	if n.TunnelIP != "" {
		t.ReleaseUnique(Nodes, tunnelIPField, n.TunnelIP)
		t.freesTunnelIP = true
	}
	t.RemoveIndex(Nodes, NodeAllIndex, n.ID)
	return t
}

// tunnelIPField names the guard of a node's mesh address:
// uniq/nodes/tunnel_ip/<ip> holds the node id, so no two nodes ever share
// one, and the set of these keys is the supernet's allocation map.
const tunnelIPField = "tunnel_ip"

// TunnelIPOwner is the id of the node holding a mesh address, or not found.
func (s *Store) TunnelIPOwner(ctx context.Context, ip string) (string, error) {
	return s.LookupUnique(ctx, Nodes, tunnelIPField, ip)
}

// ErrTunnelIPsExhausted refuses a mesh address when the overlay supernet
// has none left.
var ErrTunnelIPsExhausted = messages.Errorf(messages.KindConflict, "tunnel_ips_exhausted",
	"the overlay supernet has no free tunnel address; widen it in the settings")

// tunnelAllocator serialises this replica's tunnel address allocations and
// keeps the allocation map between them. When many nodes join at once (a
// fleet's first heartbeats), reading every taken address for each one made
// the burst quadratic, and concurrent picks of the lowest free address
// collided and retried (BENCHMARKS.md, the simulator's -overlay runs). The
// map is read again after tunnelMapTTL, after a lost race (another replica
// allocated), and after this store commits a release, so freed addresses
// are taken again first.
type tunnelAllocator struct {
	mu     sync.Mutex
	taken  map[netip.Addr]bool // nil: read it again
	readAt time.Time
}

// tunnelMapTTL bounds how long the map is trusted: another replica's
// allocations show up as a lost race at once, its releases within this.
const tunnelMapTTL = 2 * time.Second

func (a *tunnelAllocator) forget() {
	a.mu.Lock()
	a.taken = nil
	a.mu.Unlock()
}

// UpdateNodeWithTunnelIP commits n (read at its revision) with a mesh
// address from supernet (see pickHost), claimed by its guard in the same
// transaction. n.TunnelIP is set on success. A node that has one inside
// supernet already is simply updated; one whose address is outside (the
// settings moved the supernet) is re-addressed, its old guard released in
// the same transaction.
//
// evs, the lifecycle events of the change, commit with it.
func (s *Store) UpdateNodeWithTunnelIP(ctx context.Context, n *messages.Node, supernet string, evs ...*messages.Event) error {
	p, err := netip.ParsePrefix(supernet)
	if err != nil || !p.Addr().Is4() || p.Bits() > 30 {
		return fmt.Errorf("store: overlay supernet %q is not an IPv4 prefix of /30 or wider", supernet)
	}
	old := n.TunnelIP
	if old != "" {
		if ip, err := netip.ParseAddr(old); err == nil && p.Contains(ip) {
			return s.Commit(ctx, AddEvents(UpdateNode(NewTxn(), n), evs...))
		}
	}
	a := &s.tunnels
	a.mu.Lock()
	defer a.mu.Unlock()
	for attempt := range maxAllocAttempts {
		if a.taken == nil || time.Since(a.readAt) > tunnelMapTTL {
			if err := s.readTunnelMap(ctx, a); err != nil {
				return err
			}
		}
		ip, ok := pickHost(p.Masked(), a.taken, attempt)
		if !ok {
			return ErrTunnelIPsExhausted
		}
		next := *n
		next.TunnelIP = ip.String()
		t := UpdateNode(NewTxn(), &next)
		t.ClaimUniqueOr(Nodes, tunnelIPField, next.TunnelIP, next.ID, errRace)
		AddEvents(t, evs...)
		if old != "" {
			// Not freesTunnelIP: this goroutine holds a.mu, which
			// forget takes; the map is dropped below instead.
			t.ReleaseUnique(Nodes, tunnelIPField, old)
		}
		err = s.Commit(ctx, t)
		if errors.Is(err, errRace) {
			a.taken = nil // another replica took it: read the map again
			continue
		}
		if err == nil {
			a.taken[ip] = true
			if old != "" {
				a.taken = nil // the old address is free again
			}
			*n = next
		}
		return err
	}
	return errContended
}

// readTunnelMap reads every taken mesh address (keys only) into a.
func (s *Store) readTunnelMap(ctx context.Context, a *tunnelAllocator) error {
	resp, err := s.cli.Get(ctx, UniqKey(Nodes, tunnelIPField, ""), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return unavailable(err)
	}
	a.taken = make(map[netip.Addr]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if ip, err := netip.ParseAddr(lastSegment(string(kv.Key))); err == nil {
			a.taken[ip] = true
		}
	}
	a.readAt = time.Now()
	return nil
}

// pickHost chooses a free host address of p. The first attempt takes the
// lowest, so addresses fill in order; after lost races the choice spreads
// over the lowest 2^attempt free ones (at most 64), so concurrent
// allocations stop colliding on the same address.
func pickHost(p netip.Prefix, taken map[netip.Addr]bool, attempt int) (netip.Addr, bool) {
	spread := 1 << min(attempt, 6)
	skip := 0
	if spread > 1 {
		skip = rand.IntN(spread)
	}
	first, last := messages.HostRange(p)
	var found netip.Addr
	for a := first; !last.Less(a); a = a.Next() {
		if taken[a] {
			continue
		}
		found = a
		if skip == 0 {
			break
		}
		skip--
	}
	return found, found.IsValid()
}

// GetNode loads a node by id.
func (s *Store) GetNode(ctx context.Context, id string) (*messages.Node, error) {
	n, err := Get[messages.Node](ctx, s, Nodes, id)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("node", id)
	}
	return n, err
}

// NodeByName loads a node by its unique name.
func (s *Store) NodeByName(ctx context.Context, name string) (*messages.Node, error) {
	id, err := s.LookupUnique(ctx, Nodes, "name", name)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("node", name)
	}
	if err != nil {
		return nil, err
	}
	n, err := s.GetNode(ctx, id)
	if messages.KindOf(err) == messages.KindNotFound {
		// Deleted between the two reads.
		return nil, messages.NotFound("node", name)
	}
	return n, err
}

// ListNodes returns one page of nodes in id (enrollment) order.
func (s *Store) ListNodes(ctx context.Context, p Page) ([]*messages.Node, string, error) {
	return ListIndexed[messages.Node](ctx, s, Nodes, NodeAllIndex, p)
}

// NodeIDs returns one page of node ids, without reading the rows.
func (s *Store) NodeIDs(ctx context.Context, p Page) ([]string, string, error) {
	return ListIndexedIDs(ctx, s, Nodes, NodeAllIndex, p)
}
