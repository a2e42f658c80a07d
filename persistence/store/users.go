package store

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Users is the resource name of user rows: /otherix/users/<id>.
const Users = "users"

// UserAllIndex is the index sort key that lists every user in id order.
const UserAllIndex = "all"

// bootstrapKey marks that the first admin was created. It is a guard key
// rather than a row so that deleting or renaming that admin later never lets
// a restart create another one from the config password.
const bootstrapKey = Root + "uniq/bootstrap/admin/done"

// errBootstrapDone reports that the first admin exists already; BootstrapAdmin
// turns it into created=false.
var errBootstrapDone = errors.New("store: bootstrap admin already created")

// CreateUser adds a new user to t with its email guard and index key. It
// stores the email normalized (NormalizeEmail), so a guard never holds two
// spellings of one address; a taken email fails the commit with the domain
// error user_email_conflict. An invalid user (u.Validate) fails the commit
// too: a credential row is checked where it is written, not only upstream.
func CreateUser(t *Txn, u *messages.User) *Txn {
	u.Email = messages.NormalizeEmail(u.Email)
	t.checkIdentity(u.Validate)
	t.Create(Users, u)
	t.ClaimUnique(Users, "email", u.Email, u.ID)
	t.AddIndex(Users, UserAllIndex, u.ID)
	return t
}

// UpdateUser adds to t the rewrite of u, guarded by the revision it was read
// at. prev is the user as read: when the email changed, the old address is
// released and the new one claimed in the same transaction, so a user never
// holds a stale address and no address is held by two users.
func UpdateUser(t *Txn, prev, u *messages.User) *Txn {
	u.Email = messages.NormalizeEmail(u.Email)
	t.checkIdentity(u.Validate)
	t.Update(Users, u)
	if old := messages.NormalizeEmail(prev.Email); old != u.Email {
		t.ReleaseUnique(Users, "email", old)
		t.ClaimUnique(Users, "email", u.Email, u.ID)
	}
	return t
}

// DeleteUser adds to t the removal of a user, its email guard, its index
// key and its quota and usage documents. The user's sessions and API
// tokens are many keys and are ended by
// their own chunked sweeps (RevokeUserSessions, DeleteOwnerTokens); call
// those after, since a deleted user cannot log in again anyway.
func DeleteUser(t *Txn, u *messages.User) *Txn {
	t.Delete(Users, u)
	t.ReleaseUnique(Users, "email", messages.NormalizeEmail(u.Email))
	t.RemoveIndex(Users, UserAllIndex, u.ID)
	DeleteQuota(t, u.ID)
	return t
}

// GetUser loads a user by id.
func (s *Store) GetUser(ctx context.Context, id string) (*messages.User, error) {
	u, err := Get[messages.User](ctx, s, Users, id)
	if messages.KindOf(err) == messages.KindNotFound {
		return nil, messages.NotFound("user", id)
	}
	return u, err
}

// absentUserID is a well-formed user id no user ever has (NewID never makes
// an all-zero id): UserByEmail reads it for an unknown email.
const absentUserID = "00000000000000000000000000"

// UserByEmail loads a user by email, whatever its case. An unknown email
// costs the same two etcd reads as a known one (the email guard, then a user
// row: here a row that does not exist), so login timing does not tell which
// addresses have accounts.
func (s *Store) UserByEmail(ctx context.Context, email string) (*messages.User, error) {
	email = messages.NormalizeEmail(email)
	id, err := s.LookupUnique(ctx, Users, "email", email)
	if messages.KindOf(err) == messages.KindNotFound {
		if _, err := s.GetUser(ctx, absentUserID); err != nil && messages.KindOf(err) != messages.KindNotFound {
			return nil, err
		}
		return nil, messages.NotFound("user", email)
	}
	if err != nil {
		return nil, err
	}
	u, err := s.GetUser(ctx, id)
	if messages.KindOf(err) == messages.KindNotFound {
		// Deleted between the two reads.
		return nil, messages.NotFound("user", email)
	}
	return u, err
}

// ListUsers returns one page of users in id (creation) order.
func (s *Store) ListUsers(ctx context.Context, p Page) ([]*messages.User, string, error) {
	return ListIndexed[messages.User](ctx, s, Users, UserAllIndex, p)
}

// checkIdentity records the first failed validation; Commit then returns it.
func (t *Txn) checkIdentity(validate func() error) {
	if t.err == nil {
		t.err = validate()
	}
}

// BootstrapAdmin creates the first admin with the given email and password
// hash if the cluster has no user yet, and reports whether this call created
// it. One transaction checks that no user row exists and that the bootstrap
// guard is absent, and writes the user with the guard: of several replicas
// booting at once, exactly one creates the admin, and no later boot creates
// another, even after that admin is deleted.
func (s *Store) BootstrapAdmin(ctx context.Context, email, passwordHash string) (bool, error) {
	// Read first: every boot but the first finds the cluster bootstrapped,
	// and must do so without a write, which a full store refuses.
	if done, err := s.bootstrapped(ctx); err != nil || done {
		return false, err
	}
	now := s.now()
	u := &messages.User{ID: messages.NewID(), Email: email, DisplayName: "Administrator", Role: "admin",
		PasswordHash: passwordHash, CreatedAt: now, UpdatedAt: now}
	u.Normalize()
	if err := u.Validate(); err != nil {
		return false, err
	}
	t := CreateUser(NewTxn(), u)
	t.requireAbsent(bootstrapKey, errBootstrapDone)
	// A prefix compare on create revision 0 holds only for an empty range:
	// it is how one transaction asks "no user row exists".
	t.cmps = append(t.cmps, clientv3.Compare(clientv3.CreateRevision(RowPrefix(Users)), "=", 0).WithPrefix())
	t.ops = append(t.ops, clientv3.OpPut(bootstrapKey, u.ID))
	err := s.Commit(ctx, t)
	if err == nil {
		return true, nil
	}
	if k := messages.KindOf(err); k == messages.KindUnavailable || k == messages.KindStorageFull {
		return false, err
	}
	// Refused: the guard exists, a user exists, or (impossibly, given no
	// user) the email is taken. Each means the cluster is bootstrapped;
	// check rather than assume, so a real failure is not hidden.
	done, gerr := s.bootstrapped(ctx)
	if gerr != nil {
		return false, gerr
	}
	if done {
		return false, nil
	}
	return false, fmt.Errorf("bootstrap admin: %w", err)
}

// bootstrapped reports whether the first admin was created or any user
// exists.
func (s *Store) bootstrapped(ctx context.Context) (bool, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(bootstrapKey, clientv3.WithCountOnly()),
		clientv3.OpGet(RowPrefix(Users), clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return false, unavailable(err)
	}
	return resp.Responses[0].GetResponseRange().Count > 0 || resp.Responses[1].GetResponseRange().Count > 0, nil
}
