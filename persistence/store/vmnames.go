package store

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// vmNameIndex lists VMs by name across owners (names are unique per owner
// only), so a lookup by name for any owner reads the few VMs of that name
// instead of every VM's name guard.
func vmNameIndex(name string) string { return "name/" + name }

// VMIDsByNameAnyOwner returns the ids of every VM named name, whatever its
// owner, for callers whose scope is every owner (admin, operator) and for
// telling a hidden VM from a missing one. There may be several.
func (s *Store) VMIDsByNameAnyOwner(ctx context.Context, name string) ([]string, error) {
	prefix := IndexPrefix(VMs, vmNameIndex(name))
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(MaxPageSize))
	if err != nil {
		return nil, unavailable(err)
	}
	ids := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ids = append(ids, lastSegment(string(kv.Key)))
	}
	return ids, nil
}
