package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Quotas and usage live beside the user row, one document each per user:
//
//	/otherix/quotas/<user id>  the limits an admin set (absent: none)
//	/otherix/usage/<user id>   what the user's VMs ask for in total
//
// The usage document is a counter that every change of a VM's size (create,
// resize, delete) moves in the same transaction as the VM row, guarded by the
// counter's revision: two creates that both read the same usage cannot both
// commit, so a quota holds under concurrency without a lock.
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
	var q messages.Quota
	resp, err := s.cli.Get(ctx, quotaKey(user))
	if err != nil {
		return q, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return q, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &q); err != nil {
		return q, fmt.Errorf("%w: quota of %s: %v", ErrCorruptRow, user, err)
	}
	return q, nil
}

// SetQuota replaces user's quota. The user must exist; a quota with no
// limit at all removes the document.
func (s *Store) SetQuota(ctx context.Context, user string, q messages.Quota) error {
	if err := q.Validate(); err != nil {
		return err
	}
	op := clientv3.OpDelete(quotaKey(user))
	if q != (messages.Quota{}) {
		b, err := json.Marshal(q)
		if err != nil {
			return err
		}
		op = clientv3.OpPut(quotaKey(user), string(b))
	}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(RowKey(Users, user)), ">", 0)).Then(op).Commit()
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

// readUsage reads user's usage counter and its revision. A user whose
// counter was never written (their VMs predate it) is counted from their
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

// WithUsage runs commit with a Charge that moves owner's usage by delta in
// the transaction commit builds and commits. Before that it checks the
// quota for what delta grows (quota_exceeded, 422); a shrinking delta is
// never refused. When the counter moved between the read and the commit,
// the whole of it runs again from fresh reads, so commit must build its
// transaction anew on each call.
func (s *Store) WithUsage(ctx context.Context, owner string, delta messages.Usage, commit func(Charge) error) error {
	for range maxChargeAttempts {
		q, err := s.GetQuota(ctx, owner)
		if err != nil {
			return err
		}
		used, rev, err := s.readUsage(ctx, owner)
		if err != nil {
			return err
		}
		if err := q.Admit(used, delta); err != nil {
			return err
		}
		next := used.Add(delta)
		b, err := json.Marshal(next)
		if err != nil {
			return err
		}
		charge := func(t *Txn) {
			key := usageKey(owner)
			if rev == 0 {
				t.requireAbsent(key, errUsageRace)
			} else {
				t.requireRevision(key, rev, errUsageRace)
			}
			t.ops = append(t.ops, clientv3.OpPut(key, string(b)))
		}
		err = commit(charge)
		if errors.Is(err, errUsageRace) {
			continue
		}
		return err
	}
	return errUsageContended
}
