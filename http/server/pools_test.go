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

// TestStorageAPI drives the pool and volume endpoints through http/client,
// every answer checked against the contract: admin manages pools, every
// role reads them; volumes are created by whoever may create VMs; a pool
// PATCH changes the node set only and names what it refuses.
func TestStorageAPI(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	hc, _ := newContractClient(t, ts.URL)
	as := func(r security.Role) *client.Client {
		c, err := client.New(ts.URL, client.WithHTTPClient(hc), client.WithToken(tokenFor(r)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	admin, op, dev, viewer := as(security.RoleAdmin), as(security.RoleOperator), as(security.RoleDeveloper), as(security.RoleViewer)
	ctx := t.Context()

	req := messages.CreatePoolRequest{Name: "fast", Spec: messages.PoolSpec{Driver: "dir", Path: "/srv/fast", Nodes: []string{"n1"}}}
	p, err := admin.CreatePool(ctx, req)
	if err != nil || p.Spec.Path != "/srv/fast" || p.ID == "" {
		t.Fatalf("create: %+v %v", p, err)
	}
	if _, err := admin.CreatePool(ctx, req); client.ErrorCode(err) != "pool_name_conflict" {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range []messages.PoolSpec{
		{Driver: "dir", Path: "/srv/../etc", AllNodes: true},
		{Driver: "zfs", Path: "/srv/z", AllNodes: true},
		{Driver: "dir", Path: "srv/rel", AllNodes: true},
	} {
		if _, err := admin.CreatePool(ctx, messages.CreatePoolRequest{Name: "bad", Spec: bad}); client.ErrorCode(err) != "invalid_field" {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	for _, c := range []*client.Client{op, dev, viewer} {
		if _, err := c.CreatePool(ctx, messages.CreatePoolRequest{Name: "x", Spec: req.Spec}); client.ErrorCode(err) != "forbidden" {
			t.Fatalf("non-admin create: %v", err)
		}
	}
	if got, err := viewer.GetPool(ctx, "fast"); err != nil || len(got.Status.Nodes) != 1 {
		t.Fatalf("viewer get: %+v %v", got, err)
	}
	if items, _, err := dev.ListPools(ctx, client.ListOptions{}); err != nil || len(items) != 1 {
		t.Fatalf("developer list: %d %v", len(items), err)
	}
	both := []string{"n1", "n2"}
	if got, err := admin.UpdatePool(ctx, "fast", client.UpdatePoolRequest{Spec: client.UpdatePoolSpec{Nodes: &both}}); err != nil || len(got.Spec.Nodes) != 2 {
		t.Fatalf("update nodes: %+v %v", got, err)
	}
	if _, err := dev.UpdatePool(ctx, "fast", client.UpdatePoolRequest{Spec: client.UpdatePoolSpec{Nodes: &both}}); client.ErrorCode(err) != "forbidden" {
		t.Fatalf("developer update: %v", err)
	}
	for _, tc := range []struct{ body, code, field string }{
		{`{"spec":{"path":"/srv/other"}}`, "field_immutable", "spec.path"},
		{`{"spec":{"driver":"btrfs"}}`, "field_immutable", "spec.driver"},
		{`{"spec":{"shared":true}}`, "field_immutable", "spec.shared"},
		{`{"name":"slow"}`, "field_immutable", "name"},
		{`{"spec":{"nodez":["a"]}}`, "unknown_field", "spec.nodez"},
		{`{"colour":"red"}`, "unknown_field", "colour"},
		{`{"spec":{"nodes":"n1"}}`, "invalid_field", "spec.nodes"},
		{`{"spec":{"all_nodes":null}}`, "invalid_field", "spec.all_nodes"},
		{`{"spec":{"nodes":["../x"]}}`, "invalid_field", "spec.nodes[0]"},
		{`{"spec":null}`, "invalid_field", "spec"},
		{`null`, "invalid_json", ""},
	} {
		r, err := http.NewRequestWithContext(ctx, http.MethodPatch, ts.URL+"/v1/pools/fast", strings.NewReader(tc.body))
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

	v, err := dev.CreateVolume(ctx, messages.CreateVolumeRequest{Name: "data", Spec: messages.VolumeSpec{Pool: "fast", SizeBytes: 1 << 30}})
	if err != nil || v.Status.Phase != messages.VolumePending || len(v.Status.Conditions) != 1 {
		t.Fatalf("create volume: %+v %v", v, err)
	}
	for _, size := range []int64{0, -512, 1000} {
		if _, err := dev.CreateVolume(ctx, messages.CreateVolumeRequest{Name: "bad", Spec: messages.VolumeSpec{SizeBytes: size}}); client.ErrorCode(err) != "invalid_field" {
			t.Fatalf("size %d: %v", size, err)
		}
	}
	if _, err := viewer.CreateVolume(ctx, messages.CreateVolumeRequest{Name: "v", Spec: messages.VolumeSpec{SizeBytes: 512}}); client.ErrorCode(err) != "forbidden" {
		t.Fatalf("viewer create volume: %v", err)
	}
	if _, err := dev.ResizeVolume(ctx, "data", 512); client.ErrorCode(err) != "volume_shrink_unsupported" {
		t.Fatalf("shrink: %v", err)
	}
	if got, err := dev.ResizeVolume(ctx, v.ID, 2<<30); err != nil || got.Spec.SizeBytes != 2<<30 || got.Generation != 2 {
		t.Fatalf("grow: %+v %v", got, err)
	}
	if got, err := dev.GetVolume(ctx, "data"); err != nil || got.ID != v.ID {
		t.Fatalf("get: %+v %v", got, err)
	}
	if items, _, err := dev.ListVolumes(ctx, client.ListOptions{}); err != nil || len(items) != 1 {
		t.Fatalf("list: %d %v", len(items), err)
	}
	if err := admin.DeletePool(ctx, "fast"); client.ErrorCode(err) != "pool_in_use" {
		t.Fatalf("delete pool in use: %v", err)
	}
	if err := dev.DeleteVolume(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	if err := admin.DeletePool(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if _, err := viewer.GetPool(ctx, "fast"); client.ErrorCode(err) != "not_found" {
		t.Fatalf("after delete: %v", err)
	}
}
