package store

import (
	"context"

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

// DeleteNode adds to t the removal of a node, its name guard and index key.
func DeleteNode(t *Txn, n *messages.Node) *Txn {
	t.Delete(Nodes, n)
	t.ReleaseUnique(Nodes, "name", n.Name)
	t.RemoveIndex(Nodes, NodeAllIndex, n.ID)
	return t
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
