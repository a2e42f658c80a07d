package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
)

// SeedSettings writes the settings document if the cluster has none yet. It
// reports whether this call seeded it; a later boot never overwrites it, so
// settings changed through the API survive restarts and new replicas.
func (s *Store) SeedSettings(ctx context.Context, def messages.Settings) (bool, error) {
	if err := def.Validate(); err != nil {
		return false, err
	}
	// Read first: at every boot but the first the document exists, and a
	// create-if-absent transaction carries a put that etcd refuses while its
	// space alarm is raised, which would keep a full store from booting.
	if resp, err := s.cli.Get(ctx, settingsKey, clientv3.WithCountOnly()); err != nil {
		return false, unavailable(err)
	} else if resp.Count > 0 {
		return false, nil
	}
	def.Revision = 0
	b, err := json.Marshal(def)
	if err != nil {
		return false, fmt.Errorf("store: encode settings: %w", err)
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(settingsKey), "=", 0)).
		Then(clientv3.OpPut(settingsKey, string(b))).Commit()
	if err != nil {
		return false, unavailable(err)
	}
	return resp.Succeeded, nil
}

// Settings reads the settings document.
func (s *Store) Settings(ctx context.Context) (messages.Settings, error) {
	resp, err := s.cli.Get(ctx, settingsKey)
	if err != nil {
		return messages.Settings{}, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return messages.Settings{}, ErrNotSeeded
	}
	var st messages.Settings
	if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
		return messages.Settings{}, fmt.Errorf("%w: settings: %v", ErrCorruptRow, err)
	}
	st.Revision = resp.Kvs[0].ModRevision
	st.Defaults()
	return st, nil
}

// SettingsView is what a settings change is checked against: the document
// and every node and network, all read at one etcd revision.
type SettingsView struct {
	Settings messages.Settings
	Nodes    []*messages.Node
	Networks []*messages.Network
	// Rev is the etcd revision of the read.
	Rev int64
}

// ErrSettingsRaced refuses a settings change whose view went stale: the
// document changed, or a network was created, after the view was read.
// The caller reads a new view and checks again.
var ErrSettingsRaced = messages.Errorf(messages.KindStale, "revision_conflict",
	"the settings or the networks changed meanwhile; read them again")

// ReadSettingsView reads the settings, the nodes and the networks at one
// revision. Settings changes are rare admin acts: reading every row is fine.
func (s *Store) ReadSettingsView(ctx context.Context) (*SettingsView, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(settingsKey),
		clientv3.OpGet(RowPrefix(Nodes), clientv3.WithPrefix()),
		clientv3.OpGet(RowPrefix(Networks), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, unavailable(err)
	}
	v := &SettingsView{Rev: resp.Header.Revision}
	set := resp.Responses[0].GetResponseRange().Kvs
	if len(set) == 0 {
		return nil, ErrNotSeeded
	}
	if err := json.Unmarshal(set[0].Value, &v.Settings); err != nil {
		return nil, fmt.Errorf("%w: settings: %v", ErrCorruptRow, err)
	}
	v.Settings.Revision = set[0].ModRevision
	v.Settings.Defaults()
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		n, err := decode[messages.Node](kv.Value, kv.ModRevision)
		if err != nil {
			return nil, err
		}
		v.Nodes = append(v.Nodes, n)
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		n, err := decode[messages.Network](kv.Value, kv.ModRevision)
		if err != nil {
			return nil, err
		}
		v.Networks = append(v.Networks, n)
	}
	return v, nil
}

// UpdateSettings writes next if the document is still the one v read and
// no network was created since (a network checked against the old supernet
// must not slip in); else ErrSettingsRaced. It answers the document as
// written.
func (s *Store) UpdateSettings(ctx context.Context, v *SettingsView, next messages.Settings) (messages.Settings, error) {
	if err := next.Validate(); err != nil {
		return messages.Settings{}, err
	}
	next.Revision = 0
	b, err := json.Marshal(next)
	if err != nil {
		return messages.Settings{}, fmt.Errorf("store: encode settings: %w", err)
	}
	t := NewTxn()
	t.requireRevision(settingsKey, v.Settings.Revision, ErrSettingsRaced)
	t.RequireNoneCreatedUnder(RowPrefix(Networks), v.Rev, ErrSettingsRaced)
	t.ops = append(t.ops, clientv3.OpPut(settingsKey, string(b)))
	if err := s.Commit(ctx, t); err != nil {
		return messages.Settings{}, err
	}
	return s.Settings(ctx)
}
