package server

import (
	"net/http/httptest"
	"reflect"
	"testing"

	etcdversion "go.etcd.io/etcd/api/v3/version"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/internal/buildinfo"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
)

// TestVersion checks GET /v1/version against the contract for the three
// kinds of caller: anonymous (version only), authenticated of the least
// role (build details), and a bad token (401, not a quiet anonymous answer).
func TestVersion(t *testing.T) {
	s, _, _ := newTestServer(t, Config{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	hc, _ := newContractClient(t, ts.URL)
	ctx := t.Context()

	anon, err := client.New(ts.URL, client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	v, err := anon.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (messages.VersionInfo{Version: buildinfo.Version(), Features: []string{messages.FeatureDryRun}}); !reflect.DeepEqual(*v, want) {
		t.Errorf("anonymous: %+v, want the version and features alone %+v", *v, want)
	}

	viewer, err := client.New(ts.URL, client.WithHTTPClient(hc), client.WithToken(tokenFor(security.RoleViewer)))
	if err != nil {
		t.Fatal(err)
	}
	v, err = viewer.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := buildinfo.Get()
	if v.Version != b.Version || v.GoVersion != b.GoVersion || v.Platform != b.Platform ||
		v.EtcdVersion != etcdversion.Version || v.EtcdVersion == "" {
		t.Errorf("authenticated: %+v, want build %+v and etcd %s", *v, b, etcdversion.Version)
	}

	bad, err := client.New(ts.URL, client.WithHTTPClient(hc), client.WithToken("otx_not-a-token"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Version(ctx); client.ErrorCode(err) != "unauthenticated" {
		t.Errorf("bad token: %v, want unauthenticated", err)
	}
}
