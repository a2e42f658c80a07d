//go:build etcd

package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/otherix/otherix/internal/versionskew"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcdtest"
	"github.com/otherix/otherix/persistence/store"
)

// TestReplicaVersionSkewAtBoot runs the boot check on a real two-member
// cluster whose rows record each replica's version: r2 at 1.4.3 lets r1
// start at 1.5.0 (a rolling upgrade) and records it, refuses r1 at 1.6.0
// (r2 would be two minors behind) without writing anything, and a dev
// build starts unchecked. A row of a name that is not a member (a failed
// join) is not held against anyone.
func TestReplicaVersionSkewAtBoot(t *testing.T) {
	c := etcdtest.New(t)
	r1 := c.First("r1")
	c.Join(r1, "r2")
	c.PromoteAll(r1)
	st := store.New(r1.Client())
	ctx := t.Context()
	for _, r := range []*messages.Replica{
		{Name: "r1", PeerURL: "https://127.0.0.1:1", APIURL: "https://127.0.0.1:7080", Version: "1.4.3"},
		{Name: "r2", PeerURL: "https://127.0.0.1:2", Version: "1.4.3"},
		{Name: "ghost", PeerURL: "https://127.0.0.1:3", Version: "0.1.0"},
	} {
		if err := st.RecordReplica(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	rev := func() int64 {
		resp, err := r1.Client().Get(ctx, "/otherix/schema")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}

	before := rev()
	err := checkReplicaSkew(ctx, r1.Client(), "r1", "1.6.0", log)
	var me *messages.Error
	if !errors.As(err, &me) || me.Code != versionskew.Code || me.Details["member"] != "r2" || me.Details["member_version"] != "1.4.3" {
		t.Fatalf("r1 at 1.6.0 with r2 at 1.4.3: %v", err)
	}
	if after := rev(); after != before {
		t.Fatalf("a refused start wrote the store (revision %d -> %d)", before, after)
	}

	if err := checkReplicaSkew(ctx, r1.Client(), "r1", "1.5.0", log); err != nil {
		t.Fatalf("r1 at 1.5.0 with r2 at 1.4.3: %v", err)
	}
	got, err := st.GetReplica(ctx, "r1")
	if err != nil || got.Version != "1.5.0" || got.APIURL != "https://127.0.0.1:7080" {
		t.Fatalf("r1's row after the check: %+v, %v", got, err)
	}
	// r2 restarting on a patch of its old minor meanwhile is within the
	// rule; r2 downgraded two minors below r1 is not.
	if err := checkReplicaSkew(ctx, r1.Client(), "r2", "1.4.9", log); err != nil {
		t.Fatalf("r2 at 1.4.9 with r1 at 1.5.0: %v", err)
	}
	if err := checkReplicaSkew(ctx, r1.Client(), "r2", "1.3.0", log); !errors.As(err, &me) || me.Details["member"] != "r1" {
		t.Fatalf("r2 at 1.3.0 with r1 at 1.5.0: %v", err)
	}
	if err := checkReplicaSkew(ctx, r1.Client(), "r2", "dev", log); err != nil {
		t.Fatalf("a dev build: %v", err)
	}
	var raw map[string]any
	resp, err := r1.Client().Get(ctx, store.RowKey(store.Replicas, "r2"))
	if err != nil || len(resp.Kvs) != 1 || json.Unmarshal(resp.Kvs[0].Value, &raw) != nil || raw["version"] != "dev" {
		t.Fatalf("r2's row after a dev start: %v %v", raw, err)
	}
}
