package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Quotas and usage live beside the user row, one document each per user:
//
//	/otherix/quotas/<user id>  the limits an admin set (absent: none)
//	/otherix/usage/<user id>   what the user's VMs ask for in total
//
// The usage document is a counter kept only while the user has a quota:
// every change of a VM's size (create, resize, delete) of such a user moves
// it in the same transaction as the VM row, guarded by the counter's and
// the quota's revisions, so two creates that read the same usage cannot both
// commit and a quota holds under concurrency without a lock. A user without
// a quota (admins, CI accounts) pays no hot key: their changes only guard
// that the quota is still absent. Setting a first quota writes no counter;
// the first change after it counts the user's VM rows and creates the
// counter under an absent-key guard. Every change that committed before the
// quota did is in those rows (it guarded the quota's absence), and every
// change after it writes the counter, so the count cannot miss one.
const (
	quotas = "quotas"
	usages = "usage"
)

func quotaKey(user string) string { return RowKey(quotas, user) }
func usageKey(user string) string { return RowKey(usages, user) }

// errUsageRace refuses a charge whose usage counter moved since it was read;
// WithUsage reads again and retries.
var errUsageRace = errors.New("store: usage counter raced")

// maxChargeAttempts bounds the retries of one charge: each lost race means
// another change of the same user's VMs committed.
const maxChargeAttempts = 64

var errUsageContended = messages.Errorf(messages.KindUnavailable, "usage_contended",
	"too many concurrent changes to this user's vms; retry")

// GetQuota returns user's quota; a user without one has no limits.
func (s *Store) GetQuota(ctx context.Context, user string) (messages.Quota, error) {
	q, _, err := s.readQuota(ctx, user)
	if q == nil {
		return messages.Quota{}, err
	}
	return *q, err
}

// readQuota returns user's quota and its revision, nil when none is set.
func (s *Store) readQuota(ctx context.Context, user string) (*messages.Quota, int64, error) {
	resp, err := s.cli.Get(ctx, quotaKey(user))
	if err != nil {
		return nil, 0, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	var q messages.Quota
	if err := json.Unmarshal(resp.Kvs[0].Value, &q); err != nil {
		return nil, 0, fmt.Errorf("%w: quota of %s: %v", ErrCorruptRow, user, err)
	}
	return &q, resp.Kvs[0].ModRevision, nil
}

// SetQuota replaces user's quota. The user must exist; a quota with no
// limit at all removes the document and the usage counter with it.
func (s *Store) SetQuota(ctx context.Context, user string, q messages.Quota) error {
	if err := q.Validate(); err != nil {
		return err
	}
	ops := []clientv3.Op{clientv3.OpDelete(quotaKey(user)), clientv3.OpDelete(usageKey(user))}
	if q != (messages.Quota{}) {
		b, err := json.Marshal(q)
		if err != nil {
			return err
		}
		ops = []clientv3.Op{clientv3.OpPut(quotaKey(user), string(b))}
	}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(RowKey(Users, user)), ">", 0)).Then(ops...).Commit()
	if err != nil {
		return unavailable(err)
	}
	if !resp.Succeeded {
		return messages.NotFound("user", user)
	}
	return nil
}

// DeleteQuota adds the removal of user's quota and usage documents to t (a
// user's deletion).
func DeleteQuota(t *Txn, user string) *Txn {
	return t.DeleteKey(quotaKey(user)).DeleteKey(usageKey(user))
}

// Usage returns what user's VMs ask for now.
func (s *Store) Usage(ctx context.Context, user string) (messages.Usage, error) {
	u, _, err := s.readUsage(ctx, user)
	return u, err
}

// readUsage reads user's usage counter and its revision. A user without a
// counter (no quota, or none since the quota was set) is counted from their
// VM rows, with revision 0: the first change to write the counter must then
// create it, so a change committed meanwhile makes the count start over.
func (s *Store) readUsage(ctx context.Context, user string) (messages.Usage, int64, error) {
	var u messages.Usage
	resp, err := s.cli.Get(ctx, usageKey(user))
	if err != nil {
		return u, 0, unavailable(err)
	}
	if len(resp.Kvs) > 0 {
		if err := json.Unmarshal(resp.Kvs[0].Value, &u); err != nil {
			return u, 0, fmt.Errorf("%w: usage of %s: %v", ErrCorruptRow, user, err)
		}
		return u, resp.Kvs[0].ModRevision, nil
	}
	page := Page{Limit: 500}
	for {
		vms, next, err := s.ListVMs(ctx, user, page)
		if err != nil {
			return u, 0, err
		}
		for _, vm := range vms {
			u = u.Add(messages.UsageOf(vm.Spec))
		}
		if next == "" {
			return u, 0, nil
		}
		page.Cursor = next
	}
}

// Charge adds a usage change to a transaction; WithUsage hands one to the
// function that builds it.
type Charge func(*Txn)

// WithUsage runs commit with a Charge for a change that moves owner's usage
// by delta; commit builds its transaction, applies the charge to it and
// commits it. For an owner with a quota the charge checks what delta grows
// against it (quota_exceeded, 422; a shrinking delta is never refused) and
// moves the counter; for one without, it only guards that no quota was set
// meanwhile. When the quota or the counter moved between the reads and the
// commit, all of it runs again from fresh reads, so commit must build its
// transaction anew on each call. Changes of one owner with a quota are
// serialized in this process, so concurrent creates queue rather than lose
// races; an owner without one is never serialized.
func (s *Store) WithUsage(ctx context.Context, owner string, delta messages.Usage, commit func(Charge) error) error {
	// Most owners have no quota: their change is tried at once, guarded
	// by the quota's absence, without reading anything first. Owners this
	// process saw with a quota start with the read.
	quota := s.hasQuota(owner)
	for range maxChargeAttempts {
		if !quota {
			err := commit(func(t *Txn) { t.requireAbsent(quotaKey(owner), errQuotaSet) })
			switch {
			case errors.Is(err, errQuotaSet):
				quota = true
				s.noteQuota(owner, true)
				continue
			case errors.Is(err, errUsageRace):
				continue
			}
			return err
		}
		q, qrev, err := s.readQuota(ctx, owner)
		if err != nil {
			return err
		}
		if q == nil {
			quota = false
			s.noteQuota(owner, false)
			continue
		}
		unlock := s.lockOwner(owner)
		err = s.charged(ctx, owner, q, qrev, delta, commit)
		unlock()
		if errors.Is(err, errUsageRace) {
			continue
		}
		return err
	}
	return errUsageContended
}

// errQuotaSet refuses a change made as if its owner had no quota: one was
// set meanwhile (or this process did not know of it).
var errQuotaSet = errors.New("store: the owner has a quota")

// hasQuota says whether this process last saw owner with a quota.
func (s *Store) hasQuota(owner string) bool {
	s.ownersMu.Lock()
	defer s.ownersMu.Unlock()
	return s.quotaOwners[owner]
}

// noteQuota records whether owner has a quota, as last seen; only owners
// with one are kept, so the map is as large as the set of quotas.
func (s *Store) noteQuota(owner string, has bool) {
	s.ownersMu.Lock()
	defer s.ownersMu.Unlock()
	if !has {
		delete(s.quotaOwners, owner)
		return
	}
	if s.quotaOwners == nil {
		s.quotaOwners = map[string]bool{}
	}
	s.quotaOwners[owner] = true
}

// charged runs commit with a charge against owner's quota q (read at
// revision qrev) and usage counter.
func (s *Store) charged(ctx context.Context, owner string, q *messages.Quota, qrev int64, delta messages.Usage, commit func(Charge) error) error {
	used, rev, err := s.readUsage(ctx, owner)
	if err != nil {
		return err
	}
	if err := q.Admit(used, delta); err != nil {
		return err
	}
	b, err := json.Marshal(used.Add(delta))
	if err != nil {
		return err
	}
	return commit(func(t *Txn) {
		t.requireDocument(quotaKey(owner), qrev, errUsageRace)
		key := usageKey(owner)
		if rev == 0 {
			t.requireAbsent(key, errUsageRace)
		} else {
			t.requireDocument(key, rev, errUsageRace)
		}
		t.ops = append(t.ops, clientv3.OpPut(key, string(b)))
	})
}

// requireDocument guards a document at revision rev that may be removed
// meanwhile: either way the guard reports fail.
func (t *Txn) requireDocument(key string, rev int64, fail error) {
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.ModRevision(key), "=", rev))
	t.guards = append(t.guards, guard{key: key, modRev: rev, byMod: true, missingFails: true, fail: fail})
}

// lockOwner serializes this process's usage changes of one owner; the
// returned func unlocks. Locks are dropped when nobody holds or waits for
// them, so the map stays as small as the owners changing VMs right now.
func (s *Store) lockOwner(owner string) func() {
	s.ownersMu.Lock()
	l := s.owners[owner]
	if l == nil {
		if s.owners == nil {
			s.owners = map[string]*ownerLock{}
		}
		l = &ownerLock{}
		s.owners[owner] = l
	}
	l.refs++
	s.ownersMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.ownersMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.owners, owner)
		}
		s.ownersMu.Unlock()
	}
}

// ownerLock is one owner's entry in Store.owners.
type ownerLock struct {
	mu   sync.Mutex
	refs int // holders and waiters, under Store.ownersMu
}
