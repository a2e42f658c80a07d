package store

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// NodesLocal reads every node row from this member's own copy of the store
// (a serializable read: no consensus round, possibly a moment behind the
// leader). It is for checks that run on every request and may err toward
// admitting, in clusters small enough to read whole: placement's admission
// asks it only while no node it knows of has reported a size.
func (s *Store) NodesLocal(ctx context.Context) ([]*messages.Node, error) {
	resp, err := s.cli.Get(ctx, RowPrefix(Nodes), clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return nil, unavailable(err)
	}
	nodes := make([]*messages.Node, 0, len(resp.Kvs))
	for _, k := range resp.Kvs {
		n, err := decode[messages.Node](k.Value, k.ModRevision)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}
