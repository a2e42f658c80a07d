package store

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// Quorum tells whether the etcd member behind the client knows a leader
// (persistence/etcd.Member implements it).
type Quorum interface {
	// QuorumContext returns a context that ends when the member loses its
	// leader, and false when it knows none now.
	QuorumContext() (context.Context, bool)
}

// WithQuorum makes every linearizable read and every write of the store
// (and of Client) fail with messages.ErrNoQuorum at once while the member
// knows no leader, and as soon as it loses it while the call is under way.
// Without it such a call waits for etcd's own request timeout (7 s by
// default) on a replica cut off from the majority. Serializable reads,
// watches and leases are left alone: the first answer locally, the others
// resume by themselves. It replaces the client's KV in place, so give the
// store a client of its own (etcd.Member.NewClient).
func WithQuorum(q Quorum) Option {
	return func(s *Store) {
		s.cli.KV = quorumKV{KV: s.cli.KV, q: q}
	}
}

// errQuorumLost is the cause quorumKV cancels a call with.
var errQuorumLost = errors.New("store: quorum lost")

// noQuorum is the error a refused or cut call returns.
func noQuorum(cause error) error {
	e := *messages.ErrNoQuorum
	e.Err = cause
	return &e
}

// IsNoQuorum reports whether err says the member has no leader: our own
// refusal, or etcd's when it got there first.
func IsNoQuorum(err error) bool {
	return err != nil && (errors.Is(err, messages.ErrNoQuorum) || errors.Is(err, rpctypes.ErrNoLeader) ||
		errors.Is(err, rpctypes.ErrGRPCNoLeader) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) ||
		errors.Is(err, rpctypes.ErrGRPCTimeoutDueToLeaderFail))
}

// quorumKV guards a KV with a Quorum.
type quorumKV struct {
	clientv3.KV
	q Quorum
}

// bind derives a context of ctx that also ends when quorum is lost; done
// releases it.
func (k quorumKV) bind(ctx context.Context) (context.Context, func(), error) {
	qctx, ok := k.q.QuorumContext()
	if !ok {
		return nil, nil, noQuorum(nil)
	}
	c, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(qctx, func() { cancel(errQuorumLost) })
	return c, func() { stop(); cancel(nil) }, nil
}

// outcome turns the failure of a call cut by a lost quorum into no_quorum.
func outcome(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errQuorumLost) {
		return noQuorum(err)
	}
	return err
}

func (k quorumKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if clientv3.OpGet(key, opts...).IsSerializable() {
		return k.KV.Get(ctx, key, opts...)
	}
	c, done, err := k.bind(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	resp, err := k.KV.Get(c, key, opts...)
	return resp, outcome(c, err)
}

func (k quorumKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	c, done, err := k.bind(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	resp, err := k.KV.Put(c, key, val, opts...)
	return resp, outcome(c, err)
}

func (k quorumKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	c, done, err := k.bind(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	resp, err := k.KV.Delete(c, key, opts...)
	return resp, outcome(c, err)
}

func (k quorumKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	if op.IsGet() && op.IsSerializable() {
		return k.KV.Do(ctx, op)
	}
	c, done, err := k.bind(ctx)
	if err != nil {
		return clientv3.OpResponse{}, err
	}
	defer done()
	resp, err := k.KV.Do(c, op)
	return resp, outcome(c, err)
}

func (k quorumKV) Txn(ctx context.Context) clientv3.Txn {
	return &quorumTxn{ctx: ctx, kv: k}
}

// quorumTxn collects the transaction and binds it to the quorum only when
// it commits, so a transaction built and dropped holds nothing.
type quorumTxn struct {
	ctx                   context.Context
	kv                    quorumKV
	cmps                  []clientv3.Cmp
	then, els             []clientv3.Op
	hasIf, hasThen, hasEl bool
}

func (t *quorumTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.cmps, t.hasIf = cs, true
	return t
}

func (t *quorumTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.then, t.hasThen = ops, true
	return t
}

func (t *quorumTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.els, t.hasEl = ops, true
	return t
}

func (t *quorumTxn) Commit() (*clientv3.TxnResponse, error) {
	c, done, err := t.kv.bind(t.ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	inner := t.kv.KV.Txn(c)
	if t.hasIf {
		inner = inner.If(t.cmps...)
	}
	if t.hasThen {
		inner = inner.Then(t.then...)
	}
	if t.hasEl {
		inner = inner.Else(t.els...)
	}
	resp, err := inner.Commit()
	return resp, outcome(c, err)
}
