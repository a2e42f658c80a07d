package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Per-node allocation documents, /otherix/allocations/<node name>: what the
// VMs whose status names the node ask of it (vCPUs, memory, disk) and their
// ids. A document moves in the same transaction as every VM row change that
// places a VM on its node, resizes a placed VM or deletes one, guarded by
// the document's mod revision: two placements that read the same document
// cannot both commit, on one replica or several, so a node is never promised
// more than its capacity × overcommit. Placement reads the candidate nodes'
// documents and never the VM rows. A node with nothing counted has no
// document (an absent document reads as empty, and its first reservation
// creates it under an absent-key guard).

// AllocationKey is where node's allocation document lives.
func AllocationKey(node string) string { return RowKey(Allocations, node) }

// errAllocationRace refuses a change whose allocation document moved since
// it was read; WithAllocations reads again and retries.
var errAllocationRace = errors.New("store: allocation document raced")

// errAllocationContended answers a change that lost its allocation race
// maxChargeAttempts times in a row; it is a stale-revision error, so the
// VM actor plans the command again from a fresh read.
var errAllocationContended = messages.Errorf(messages.KindStale, "allocation_contended",
	"too many concurrent placements on this node; retry")

// Allocations reads the allocation documents of nodes in one linearizable
// transaction (chunked under the op limit); a node without one gets an empty
// document at revision 0.
func (s *Store) Allocations(ctx context.Context, nodes []string) (map[string]*messages.NodeAllocation, error) {
	out := make(map[string]*messages.NodeAllocation, len(nodes))
	for start := 0; start < len(nodes); start += s.maxOps {
		chunk := nodes[start:min(start+s.maxOps, len(nodes))]
		ops := make([]clientv3.Op, len(chunk))
		for i, n := range chunk {
			ops[i] = clientv3.OpGet(AllocationKey(n))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, unavailable(err)
		}
		for i, n := range chunk {
			a := &messages.NodeAllocation{Node: n}
			if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) > 0 {
				if a, err = decode[messages.NodeAllocation](kvs[0].Value, kvs[0].ModRevision); err != nil {
					return nil, fmt.Errorf("allocation of node %s: %w", n, err)
				}
			}
			out[n] = a
		}
	}
	return out, nil
}

// Allocation reads one node's allocation document (empty at revision 0 when
// there is none).
func (s *Store) Allocation(ctx context.Context, node string) (*messages.NodeAllocation, error) {
	m, err := s.Allocations(ctx, []string{node})
	if err != nil {
		return nil, err
	}
	return m[node], nil
}

// AdmitAllocation judges a change of a node's allocation document from
// `from` to `to` (the VM being placed or resized counted in `to`): nil
// admits, an error (placement's insufficient_capacity) refuses. It is
// asked only when some resource grows.
type AdmitAllocation func(ctx context.Context, from, to *messages.NodeAllocation) error

// WithAllocations runs commit with a Charge that moves the allocation
// documents of the nodes a VM row change touches: before is the row as read
// (nil for a create), after what the change writes (nil for a delete). The
// VM is uncounted on before's node and counted on after's, with the size of
// each. When a document grows, admit judges it first (nil admits all).
// commit builds its transaction, applies the charge and commits it; when a
// document moved between the read and the commit, all of it runs again from
// a fresh read, so commit must build its transaction anew on each call. The
// changes of one node's document are serialized in this process, so the
// placements of one replica queue instead of losing races to each other.
func (s *Store) WithAllocations(ctx context.Context, before, after *messages.VM, admit AdmitAllocation, commit func(Charge) error) error {
	nodes := touchedNodes(before, after)
	if len(nodes) == 0 {
		return commit(func(*Txn) {})
	}
	unlock := s.lockNodes(nodes)
	defer unlock()
	for range maxChargeAttempts {
		docs, err := s.Allocations(ctx, nodes)
		if err != nil {
			return err
		}
		var moved []*messages.NodeAllocation
		for _, n := range nodes {
			from := docs[n]
			to := from.Clone()
			if before != nil && before.Status.Node == n {
				to.Remove(before.ID, before.Spec)
			}
			if after != nil && after.Status.Node == n {
				to.Add(after.ID, after.Spec)
			}
			if to.Equal(from) {
				continue
			}
			if admit != nil && grows(from, to) {
				if err := admit(ctx, from, to); err != nil {
					return err
				}
			}
			moved = append(moved, to)
		}
		err = commit(func(t *Txn) {
			for _, a := range moved {
				putAllocation(t, a)
			}
		})
		if !errors.Is(err, errAllocationRace) {
			return err
		}
	}
	return errAllocationContended
}

// touchedNodes are the nodes whose documents a change from before to after
// may move, sorted (the order locks are taken in).
func touchedNodes(before, after *messages.VM) []string {
	var nodes []string
	if before != nil && before.Status.Node != "" {
		nodes = append(nodes, before.Status.Node)
	}
	if after != nil && after.Status.Node != "" && (len(nodes) == 0 || nodes[0] != after.Status.Node) {
		nodes = append(nodes, after.Status.Node)
	}
	if len(nodes) == 2 && nodes[1] < nodes[0] {
		nodes[0], nodes[1] = nodes[1], nodes[0]
	}
	return nodes
}

func grows(from, to *messages.NodeAllocation) bool {
	return to.CPUs > from.CPUs || to.MemoryMiB > from.MemoryMiB || to.DiskGiB > from.DiskGiB
}

// putAllocation adds a's write to t, guarded by the revision it was read at
// (absent when 0); a document that counts nothing is removed.
func putAllocation(t *Txn, a *messages.NodeAllocation) {
	key := AllocationKey(a.Node)
	if a.Revision == 0 {
		t.requireAbsent(key, errAllocationRace)
	} else {
		t.requireDocument(key, a.Revision, errAllocationRace)
	}
	if len(a.VMs) == 0 {
		t.ops = append(t.ops, clientv3.OpDelete(key))
		return
	}
	t.put(key, a)
}

// lockNodes serializes this process's changes of the named nodes'
// documents (sorted, so two changes never wait on each other crosswise).
func (s *Store) lockNodes(nodes []string) func() {
	unlocks := make([]func(), len(nodes))
	for i, n := range nodes {
		unlocks[i] = s.allocLocks.lock(n)
	}
	return func() {
		for i := len(unlocks) - 1; i >= 0; i-- {
			unlocks[i]()
		}
	}
}

// keyLocks is a set of mutexes by key, each dropped when nobody holds or
// waits for it.
type keyLocks struct {
	mu    sync.Mutex
	locks map[string]*ownerLock
}

func (k *keyLocks) lock(key string) func() {
	k.mu.Lock()
	l := k.locks[key]
	if l == nil {
		if k.locks == nil {
			k.locks = map[string]*ownerLock{}
		}
		l = &ownerLock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// CountAllocations computes every node's allocation from the VM rows, all
// read at one revision (0: now), which it returns: the truth the documents
// must equal. It reads every VM, so it is for the boot migration and the
// consistency check, never for placement.
func (s *Store) CountAllocations(ctx context.Context, rev int64) (map[string]*messages.NodeAllocation, int64, error) {
	counted := map[string]*messages.NodeAllocation{}
	prefix := RowPrefix(VMs)
	from, end := prefix, prefixEnd(prefix)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(500)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, 0, unavailable(err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			vm, err := decode[messages.VM](kv.Value, kv.ModRevision)
			if err != nil {
				return nil, 0, fmt.Errorf("vm %s: %w", lastSegment(string(kv.Key)), err)
			}
			if vm.Status.Node == "" {
				continue
			}
			a := counted[vm.Status.Node]
			if a == nil {
				a = &messages.NodeAllocation{Node: vm.Status.Node}
				counted[vm.Status.Node] = a
			}
			a.Add(vm.ID, vm.Spec)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return counted, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// storedAllocations reads every allocation document at revision rev.
func (s *Store) storedAllocations(ctx context.Context, rev int64) (map[string]*messages.NodeAllocation, error) {
	resp, err := s.cli.Get(ctx, RowPrefix(Allocations), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, unavailable(err)
	}
	out := make(map[string]*messages.NodeAllocation, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		a, err := decode[messages.NodeAllocation](kv.Value, kv.ModRevision)
		if err != nil {
			return nil, fmt.Errorf("allocation %s: %w", lastSegment(string(kv.Key)), err)
		}
		out[lastSegment(string(kv.Key))] = a
	}
	return out, nil
}

// AllocationDrift is one node whose allocation document differs from the
// count of its VM rows.
type AllocationDrift struct {
	Node string
	// Stored is the document (empty when there is none), Counted what
	// the VM rows add up to (empty when none is placed there).
	Stored, Counted *messages.NodeAllocation
}

// CheckAllocations compares every allocation document with the count of the
// VM rows, both read at one revision, and returns the nodes that differ
// (sorted by name) and that revision. No drift is possible while every VM
// row change goes through WithAllocations; a non-empty answer means a
// writer bypassed it.
func (s *Store) CheckAllocations(ctx context.Context) ([]AllocationDrift, int64, error) {
	counted, rev, err := s.CountAllocations(ctx, 0)
	if err != nil {
		return nil, 0, err
	}
	stored, err := s.storedAllocations(ctx, rev)
	if err != nil {
		return nil, 0, err
	}
	var drift []AllocationDrift
	seen := map[string]bool{}
	check := func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		st, ct := stored[n], counted[n]
		if st == nil {
			st = &messages.NodeAllocation{Node: n}
		}
		if ct == nil {
			ct = &messages.NodeAllocation{Node: n}
		}
		if !st.Equal(ct) {
			drift = append(drift, AllocationDrift{Node: n, Stored: st, Counted: ct})
		}
	}
	for n := range stored {
		check(n)
	}
	for n := range counted {
		check(n)
	}
	sort.Slice(drift, func(i, j int) bool { return drift[i].Node < drift[j].Node })
	return drift, rev, nil
}

// maxMigrationAttempts bounds how often the boot migration counts the VMs
// again because a VM row changed under its count.
const maxMigrationAttempts = 20

// MigrateAllocations builds the allocation documents of a store written
// before they existed, from the VM rows, once: it counts every VM at one
// revision and creates each node's document in a transaction of its own,
// guarded by the document's absence and by no VM row having changed since
// the count (any change, anywhere: a VM placed on the node meanwhile could
// be any of them); a lost guard counts again. It then sets a marker, so
// later boots cost one read. It is idempotent (documents that exist are
// kept) and safe to run on several replicas at once. It returns how many
// documents it created.
func (s *Store) MigrateAllocations(ctx context.Context) (int, error) {
	resp, err := s.cli.Get(ctx, allocationsMigrated, clientv3.WithCountOnly())
	if err != nil {
		return 0, unavailable(err)
	}
	if resp.Count > 0 {
		return 0, nil
	}
	created := 0
	for range maxMigrationAttempts {
		counted, rev, err := s.CountAllocations(ctx, 0)
		if err != nil {
			return created, err
		}
		raced := false
		for _, a := range sortedAllocations(counted) {
			key := AllocationKey(a.Node)
			v, err := marshalRow(a)
			if err != nil {
				return created, err
			}
			resp, err := s.cli.Txn(ctx).If(
				clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
				clientv3.Compare(clientv3.ModRevision(RowPrefix(VMs)), "<", rev+1).WithPrefix(),
			).Then(clientv3.OpPut(key, v)).Else(clientv3.OpGet(key, clientv3.WithCountOnly())).Commit()
			if err != nil {
				return created, unavailable(err)
			}
			switch {
			case resp.Succeeded:
				created++
			case resp.Responses[0].GetResponseRange().Count > 0:
				// Built already (an earlier attempt, or another replica).
			default:
				raced = true
			}
			if raced {
				break
			}
		}
		if raced {
			continue
		}
		if _, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(allocationsMigrated), "=", 0)).
			Then(clientv3.OpPut(allocationsMigrated, "1")).Commit(); err != nil {
			return created, unavailable(err)
		}
		return created, nil
	}
	return created, errors.New("store: allocation migration: the vm rows kept changing under the count; retry")
}

func sortedAllocations(m map[string]*messages.NodeAllocation) []*messages.NodeAllocation {
	out := make([]*messages.NodeAllocation, 0, len(m))
	for _, a := range m {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// RepairAllocations runs CheckAllocations and rewrites each document that
// differs to the count of the VM rows, in a transaction of its own guarded
// by the document's revision as checked and by no VM row having changed
// since the count (the same guard as the migration's): a repair never
// overwrites a change it did not count. It returns the drift it found and
// how many documents it repaired; a drifted document left as it was (a VM
// row changed meanwhile) is repaired by a later run.
func (s *Store) RepairAllocations(ctx context.Context) ([]AllocationDrift, int, error) {
	drift, rev, err := s.CheckAllocations(ctx)
	if err != nil || len(drift) == 0 {
		return drift, 0, err
	}
	repaired := 0
	for _, d := range drift {
		key := AllocationKey(d.Node)
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(RowPrefix(VMs)), "<", rev+1).WithPrefix()}
		if d.Stored.Revision == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", d.Stored.Revision))
		}
		op := clientv3.OpDelete(key)
		if len(d.Counted.VMs) > 0 {
			v, err := marshalRow(d.Counted)
			if err != nil {
				return drift, repaired, err
			}
			op = clientv3.OpPut(key, v)
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(op).Commit()
		if err != nil {
			return drift, repaired, unavailable(err)
		}
		if resp.Succeeded {
			repaired++
		}
	}
	return drift, repaired, nil
}
