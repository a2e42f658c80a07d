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
	return st, nil
}
