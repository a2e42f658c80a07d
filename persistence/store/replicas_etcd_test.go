//go:build etcd

package store_test

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/storetest"
)

// TestServingReplicas: only rows of voting members are failover targets; a
// row left by a replica that is no member (a failed join, a removed
// replica) is not.
func TestServingReplicas(t *testing.T) {
	st := storetest.New(t)
	ctx := context.Background()
	ml, err := st.Client().MemberList(ctx, clientv3.WithSerializable())
	if err != nil || len(ml.Members) != 1 {
		t.Fatalf("members: %v %v", ml, err)
	}
	self := ml.Members[0].Name
	for _, r := range []*messages.Replica{
		{Name: self, PeerURL: "unix://x", APIURL: "https://a:7080", AgentURL: "https://a:7443"},
		{Name: "ghost", PeerURL: "https://g:2380", APIURL: "https://g:7080", AgentURL: "https://g:7443"},
	} {
		if err := st.RecordReplica(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := st.ServingReplicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Name != self || rs[0].APIURL != "https://a:7080" {
		t.Fatalf("serving replicas %+v", rs)
	}
}
