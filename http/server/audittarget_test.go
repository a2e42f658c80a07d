package server

import (
	"slices"
	"testing"
)

// TestAuditTargetsNodesAndNetworks: entries of routes that address a
// resource by name (nodes, networks) and of creates name the resource; they
// used to record only a route's :id, which these routes do not have.
func TestAuditTargetsNodesAndNetworks(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	req{method: "POST", path: "/v1/networks", body: `{"name":"blue","cidr":"10.10.0.0/24"}`}.do(t, s)
	req{method: "PATCH", path: "/v1/networks/blue", body: `{"egress":true}`}.do(t, s)
	req{method: "DELETE", path: "/v1/networks/blue"}.do(t, s)
	req{method: "POST", path: "/v1/nodes/n1/cordon"}.do(t, s)
	req{method: "POST", path: "/v1/nodes/n1/uncordon"}.do(t, s)
	req{method: "DELETE", path: "/v1/nodes/n1"}.do(t, s)
	req{method: "POST", path: "/v1/nodes/join-tokens", body: `{"node_name":"n2"}`}.do(t, s)
	req{method: "POST", path: "/v1/vms", body: createBody}.do(t, s)
	req{method: "DELETE", path: "/v1/vms/web-1"}.do(t, s)

	want := []string{
		"POST /v1/networks blue",
		"PATCH /v1/networks/:name blue",
		"DELETE /v1/networks/:name blue",
		"POST /v1/nodes/:name/cordon n1",
		"POST /v1/nodes/:name/uncordon n1",
		"DELETE /v1/nodes/:name n1",
		"POST /v1/nodes/join-tokens <token id>",
		"POST /v1/vms web-1",
		"DELETE /v1/vms/:id web-1",
	}
	var got []string
	for _, e := range cp.auditLog() {
		target := e.Target
		if e.Action == "POST /v1/nodes/join-tokens" && e.Result == "ok" && target != "" && target != "n2" {
			target = "<token id>"
		}
		got = append(got, e.Action+" "+target)
	}
	if !slices.Equal(got, want) {
		t.Errorf("audit targets:\n got %q\nwant %q", got, want)
	}
}
