package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// TestNetworksAPI drives the network endpoints through http/client, every
// answer checked against the contract: admin writes, everyone reads, and the
// network error codes reach the wire as 400 and 409. A PATCH changes egress
// only: every other field is refused by name.
func TestNetworksAPI(t *testing.T) {
	s, cp, _ := newTestServer(t, Config{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	hc, ct := newContractClient(t, ts.URL)
	as := func(r security.Role) *client.Client {
		c, err := client.New(ts.URL, client.WithHTTPClient(hc), client.WithToken(tokenFor(r)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	admin, dev := as(security.RoleAdmin), as(security.RoleDeveloper)
	ctx := t.Context()

	n, err := admin.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "blue", CIDR: "10.10.0.0/24", Egress: true})
	if err != nil || n.Type != messages.NetworkOverlay || n.MTU != 1390 || n.VNI == 0 || n.Gateway != "169.254.1.1" ||
		n.DNS != "169.254.1.1" || !n.Egress || n.GatewayMAC != messages.GatewayMAC(n.ID) {
		t.Fatalf("create: %+v %v", n, err)
	}
	if _, err := admin.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "blue", CIDR: "10.11.0.0/24"}); client.ErrorCode(err) != "network_name_conflict" {
		t.Fatalf("duplicate: %v", err)
	}
	for _, cidr := range []string{"10.10.0.1/24", "10.10.0.0/30", "fd00::/64", "nope"} {
		if _, err := admin.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "x", CIDR: cidr}); client.ErrorCode(err) != "invalid_field" {
			t.Fatalf("cidr %s: %v", cidr, err)
		}
	}
	if _, err := admin.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "x", CIDR: "100.87.0.0/24"}); client.ErrorCode(err) != "network_overlap" {
		t.Fatalf("supernet: %v", err)
	}
	if _, err := dev.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "red", CIDR: "10.12.0.0/24"}); client.ErrorCode(err) != "forbidden" {
		t.Fatalf("developer create: %v", err)
	}
	l, err := admin.CreateNetwork(ctx, messages.CreateNetworkRequest{Name: "lan", CIDR: "192.168.7.0/24", Type: messages.NetworkLocal})
	if err != nil || l.MTU != 1500 || l.VNI != 0 {
		t.Fatalf("local: %+v %v", l, err)
	}
	if items, _, err := dev.ListNetworks(ctx, client.ListOptions{}); err != nil || len(items) != 2 {
		t.Fatalf("developer list: %d %v", len(items), err)
	}
	if got, err := as(security.RoleViewer).GetNetwork(ctx, "blue"); err != nil || got.ID != n.ID {
		t.Fatalf("viewer get: %+v %v", got, err)
	}
	if _, err := dev.GetNetwork(ctx, "missing"); client.ErrorCode(err) != "not_found" {
		t.Fatalf("missing: %v", err)
	}

	// PATCH: egress flips in place, nothing else may change.
	off := false
	got, err := admin.UpdateNetwork(ctx, "blue", client.UpdateNetworkRequest{Egress: &off})
	if err != nil || got.Egress || got.ID != n.ID || got.CIDR != n.CIDR || got.VNI != n.VNI || got.Revision <= n.Revision {
		t.Fatalf("update egress off: %+v %v", got, err)
	}
	same, err := admin.UpdateNetwork(ctx, "blue", client.UpdateNetworkRequest{Egress: &off})
	if err != nil || same.Revision != got.Revision || same.Egress {
		t.Fatalf("no-op update: %+v %v", same, err)
	}
	if empty, err := admin.UpdateNetwork(ctx, "blue", client.UpdateNetworkRequest{}); err != nil || empty.Revision != got.Revision {
		t.Fatalf("empty patch: %+v %v", empty, err)
	}
	on := true
	if _, err := admin.UpdateNetwork(ctx, "blue", client.UpdateNetworkRequest{Egress: &on}, client.WithIfMatch(n.Revision)); client.ErrorCode(err) != "revision_conflict" {
		t.Fatalf("stale If-Match: %v", err)
	}
	if cur, err := admin.GetNetwork(ctx, "blue"); err != nil || cur.Egress || cur.Revision != got.Revision {
		t.Fatalf("after the refused update: %+v %v", cur, err)
	}
	if back, err := admin.UpdateNetwork(ctx, "blue", client.UpdateNetworkRequest{Egress: &on}, client.WithIfMatch(got.Revision)); err != nil || !back.Egress {
		t.Fatalf("update with If-Match: %+v %v", back, err)
	}
	if _, err := dev.UpdateNetwork(ctx, "blue", client.UpdateNetworkRequest{Egress: &off}); client.ErrorCode(err) != "forbidden" {
		t.Fatalf("developer update: %v", err)
	}
	if _, err := admin.UpdateNetwork(ctx, "missing", client.UpdateNetworkRequest{Egress: &off}); client.ErrorCode(err) != "not_found" {
		t.Fatalf("update missing: %v", err)
	}
	for _, tc := range []struct{ body, code, field string }{
		{`{"cidr":"10.20.0.0/24"}`, "field_immutable", "cidr"},
		{`{"egress":false,"type":"local"}`, "field_immutable", "type"},
		{`{"mtu":1200}`, "field_immutable", "mtu"},
		{`{"vni":4200}`, "field_immutable", "vni"},
		{`{"name":"green"}`, "field_immutable", "name"},
		{`{"egress":true,"revision":3}`, "field_immutable", "revision"},
		{`{"egres":true}`, "unknown_field", "egres"},
		{`{"Egress":true}`, "unknown_field", "Egress"},
		{`{"egress":"yes"}`, "invalid_field", "egress"},
		{`{"egress":null}`, "invalid_field", "egress"},
		{`null`, "invalid_json", ""},
		{`[]`, "invalid_json", ""},
		{`{"egress":true} {}`, "invalid_json", ""},
	} {
		r, err := http.NewRequestWithContext(ctx, http.MethodPatch, ts.URL+"/v1/networks/blue", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		withToken(r, security.RoleAdmin)
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		var env struct{ Error apierror.Detail }
		err = json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusBadRequest || env.Error.Code != tc.code ||
			(tc.field != "" && env.Error.Details["field"] != tc.field) {
			t.Errorf("PATCH %s: %d %+v %v; want 400 %s field %q", tc.body, resp.StatusCode, env.Error, err, tc.code, tc.field)
		}
	}
	if cur, err := admin.GetNetwork(ctx, "blue"); err != nil || !cur.Egress || cur.CIDR != n.CIDR || cur.Type != n.Type {
		t.Fatalf("after refused patches: %+v %v", cur, err)
	}

	cp.fakeNetworks.inUse["blue"] = true
	if err := admin.DeleteNetwork(ctx, "blue"); client.ErrorCode(err) != "network_in_use" {
		t.Fatalf("in use: %v", err)
	}
	if err := dev.DeleteNetwork(ctx, "lan"); client.ErrorCode(err) != "forbidden" {
		t.Fatalf("developer delete: %v", err)
	}
	if err := admin.DeleteNetwork(ctx, "lan"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.GetNetwork(ctx, "lan"); client.ErrorCode(err) != "not_found" {
		t.Fatalf("after delete: %v", err)
	}
	for _, want := range []string{"POST /v1/networks 201", "POST /v1/networks 400", "POST /v1/networks 403", "POST /v1/networks 409",
		"GET /v1/networks 200", "GET /v1/networks/{name} 200", "GET /v1/networks/{name} 404",
		"PATCH /v1/networks/{name} 200", "PATCH /v1/networks/{name} 400", "PATCH /v1/networks/{name} 403",
		"PATCH /v1/networks/{name} 404", "PATCH /v1/networks/{name} 409",
		"DELETE /v1/networks/{name} 204", "DELETE /v1/networks/{name} 409", "DELETE /v1/networks/{name} 403"} {
		if !ct.seen[want] {
			t.Errorf("not exercised: %s (%v)", want, ct.seen)
		}
	}
}
