package store

import (
	"context"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// VMIDsByNameAnyOwner returns the ids of every VM named name, whatever its
// owner, for callers whose scope is every owner (admin, operator). Names are
// unique per owner only, so there may be several. It reads the name guards
// keys-only, one key per VM: fine for a lookup by hand, not for a hot path.
func (s *Store) VMIDsByNameAnyOwner(ctx context.Context, name string) ([]string, error) {
	prefix := UniqKey(VMs, "name", "")
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, unavailable(err)
	}
	var ids []string
	for _, kv := range resp.Kvs {
		// The guard key ends in <owner>/<name>; owners are ids without '/'.
		rest := strings.TrimPrefix(string(kv.Key), prefix)
		if _, n, ok := strings.Cut(rest, "/"); ok && n == name {
			ids = append(ids, string(kv.Value))
		}
	}
	return ids, nil
}
