//go:build etcd

package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/schema"
)

// TestRefusesNewerDataFormat: otherix-api started on a store a newer
// version migrated refuses to start, says which format and writer, and
// leaves the store as it was; the store serves again once the format is
// one it reads.
func TestRefusesNewerDataFormat(t *testing.T) {
	dataDir := t.TempDir()
	r := startRun(t, dataDir, "")
	if status, code, _ := r.login(t); status != http.StatusOK {
		t.Fatalf("login: %d %s", status, code)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	newer := schema.Document{Version: schema.Current + 1, WrittenBy: "otherix-api 9.9.0", UpdatedAt: time.Now().UTC()}
	before := setSchema(t, dataDir, &newer)
	_, err := tryRun(t, dataDir, "")
	if err == nil || !schema.IsTooNew(err) || !strings.Contains(err.Error(), "otherix-api 9.9.0") {
		t.Fatalf("start on newer data: %v", err)
	}
	if after := setSchema(t, dataDir, nil); after != before {
		t.Fatalf("the refused start wrote the store (revision %d -> %d)", before, after)
	}

	setSchema(t, dataDir, &schema.Document{Version: schema.Current, WrittenBy: "otherix-api test"})
	r = startRun(t, dataDir, "")
	if status, code, _ := r.login(t); status != http.StatusOK {
		t.Fatalf("login after the format is readable again: %d %s", status, code)
	}
}

// setSchema opens the stopped API's data dir, writes doc when it is not
// nil, and returns the store's revision after.
func setSchema(t *testing.T, dataDir string, doc *schema.Document) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, etcd.Config{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if doc != nil {
		b, _ := json.Marshal(doc)
		if _, err := m.Client().Put(ctx, schema.Key, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := m.Client().Get(ctx, schema.Key)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}
