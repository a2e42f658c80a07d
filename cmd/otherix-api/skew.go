package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/internal/versionskew"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// errSkewChanged reports that a replica row moved between the check and
// the stamp: another replica started meanwhile, so the check runs again.
var errSkewChanged = errors.New("a replica row changed during the version check")

// replicaRow is the part of a replica row the version check reads. It is
// decoded leniently and before the data format is checked: a newer
// replica's row must still be readable so this one can refuse by version,
// which says more than a data format number.
type replicaRow struct {
	Version string `json:"version"`
}

// checkReplicaSkew is the boot step that enforces the replica rule
// (versionskew.Replica) before this replica migrates or serves anything:
// every other member's recorded version must be within one minor version
// of this one. It then records this replica's version in its own row in
// the same transaction, guarded by the revisions of the rows it checked,
// so two replicas starting at once cannot both pass against each other's
// old versions. The refusal is a *messages.Error with code version_skew.
// A full store skips the stamp (it must still boot to free space).
func checkReplicaSkew(ctx context.Context, cli *clientv3.Client, self, version string, log *slog.Logger) error {
	for {
		err := checkReplicaSkewOnce(ctx, cli, self, version, log)
		if !errors.Is(err, errSkewChanged) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// etcdMemberNames lists the names of the cluster's etcd members (voters
// and started learners).
func etcdMemberNames(cli *clientv3.Client) func(context.Context) (map[string]bool, error) {
	return func(ctx context.Context) (map[string]bool, error) {
		ml, err := cli.MemberList(ctx)
		if err != nil {
			return nil, fmt.Errorf("version check: list members: %w", err)
		}
		members := make(map[string]bool, len(ml.Members))
		for _, m := range ml.Members {
			if m.Name != "" {
				members[m.Name] = true
			}
		}
		return members, nil
	}
}

func checkReplicaSkewOnce(ctx context.Context, cli *clientv3.Client, self, version string, log *slog.Logger) error {
	members, err := etcdMemberNames(cli)(ctx)
	if err != nil {
		return err
	}
	resp, err := cli.Get(ctx, store.RowPrefix(store.Replicas), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("version check: read replica rows: %w", err)
	}
	others := map[string]string{}
	var own map[string]json.RawMessage
	ownRev := int64(0)
	cmps := []clientv3.Cmp{
		// No replica row appeared since the read.
		clientv3.Compare(clientv3.CreateRevision(store.RowPrefix(store.Replicas)), "<", resp.Header.Revision+1).WithPrefix(),
	}
	for _, kv := range resp.Kvs {
		name := string(kv.Key[len(store.RowPrefix(store.Replicas)):])
		if name == self {
			ownRev = kv.ModRevision
			if json.Unmarshal(kv.Value, &own) != nil {
				own = nil
			}
			continue
		}
		// A row whose member is gone (a join that failed) speaks for no
		// running replica.
		if !members[name] {
			continue
		}
		var r replicaRow
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			log.Warn("version check: unreadable replica row skipped", "member", name, "err", err)
			continue
		}
		others[name] = r.Version
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
	}
	checked, err := versionskew.Members(version, others)
	if err != nil {
		var me *messages.Error
		errors.As(err, &me)
		log.Error("refusing to start: version skew between replicas", "code", versionskew.Code,
			"version", version, "member", me.Details["member"], "member_version", me.Details["member_version"],
			"rule", versionskew.ReplicaRule)
		return err
	}
	if checked == 0 && len(others) > 0 {
		log.Info("replica versions not checked: development build or unrecorded versions", "version", version, "members", others)
	}
	// Stamp this replica's version into its row, keeping what the row says
	// (URLs, join time) until the replica records itself when serving.
	if own == nil {
		own = map[string]json.RawMessage{"name": mustJSON(self)}
	}
	own["version"] = mustJSON(version)
	b, err := json.Marshal(own)
	if err != nil {
		return err
	}
	key := store.RowKey(store.Replicas, self)
	cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", ownRev))
	tr, err := cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, string(b))).Commit()
	switch {
	case store.IsNoSpace(err):
		log.Warn("store full: this replica's version is not recorded until it starts serving", "version", version)
		return nil
	case err != nil:
		return fmt.Errorf("version check: record this replica's version: %w", err)
	case !tr.Succeeded:
		return errSkewChanged
	}
	return nil
}

func mustJSON(v string) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
