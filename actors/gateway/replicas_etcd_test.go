//go:build etcd

package gateway_test

import (
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
)

// TestHeartbeatNamesReplicas: a heartbeat answer carries the agent URLs of
// the voting replicas (a row of a replica that is no member is left out),
// and GET /v1/cluster/endpoints' source the API URLs; a control plane that
// recorded none answers none.
func TestHeartbeatNamesReplicas(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	g, st := startNodes(t, clock)
	ctx := t.Context()
	_, cert := enrollNode(t, g, "n1")
	if resp := hbeat(t, g, cert, observed(4)); len(resp.ReplicaURLs) != 0 {
		t.Fatalf("no replica recorded, yet the answer names %v", resp.ReplicaURLs)
	}
	if e, err := g.ClusterEndpoints(ctx); err != nil || e.APIURLs == nil || len(e.APIURLs) != 0 {
		t.Fatalf("endpoints %+v %v", e, err)
	}

	ml, err := st.Client().MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*messages.Replica{
		{Name: ml.Members[0].Name, PeerURL: "https://a:2380", APIURL: "https://a:7080", AgentURL: "https://a:7443"},
		{Name: "gone", PeerURL: "https://g:2380", APIURL: "https://g:7080", AgentURL: "https://g:7443"},
	} {
		if err := st.RecordReplica(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if e, err := g.ClusterEndpoints(ctx); err != nil || !slices.Equal(e.APIURLs, []string{"https://a:7080"}) {
		t.Fatalf("endpoints %+v %v", e, err)
	}
	// The heartbeat's list is cached for up to 10 s of real time.
	testutil.EventuallyReport(t, 15*time.Second, 200*time.Millisecond, "the heartbeat names the replica", func() (bool, string) {
		resp := hbeat(t, g, cert, observed(4))
		return slices.Equal(resp.ReplicaURLs, []string{"https://a:7443"}), ""
	})
}
