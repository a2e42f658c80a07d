package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestWatchEachRetries503: a stream (re)opened while the replicas elect a
// leader answers 503; WatchEach tries again, resuming with Last-Event-ID,
// rather than ending the watch (the CLI's -w exited at a replica's kill). A
// 503 that will not pass (a server without watches) still ends it.
func TestWatchEachRetries503(t *testing.T) {
	var opens atomic.Int32
	var lastID atomic.Value
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := opens.Add(1)
		lastID.Store(r.Header.Get("Last-Event-ID"))
		if n <= 2 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"unavailable","message":"etcd did not answer"}}`))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = fmt.Fprintf(w, "id: 8\nevent: added\ndata: {\"id\":\"a\"}\n\n")
	}))
	defer ts.Close()
	c, err := New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	done := errors.New("done")
	var got []int64
	err = c.WatchEach(t.Context(), WatchOptions{Types: []string{"vms"}, Since: 7}, func(e WatchEvent) error {
		got = append(got, e.ID)
		return done
	})
	if !errors.Is(err, done) || len(got) != 1 || got[0] != 8 || opens.Load() != 3 || lastID.Load() != "7" {
		t.Fatalf("WatchEach: %v, events %v after %d opens, Last-Event-ID %v", err, got, opens.Load(), lastID.Load())
	}

	off := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"code":"watch_unavailable","message":"no watches here"}}`))
	}))
	defer off.Close()
	c, err = New(off.URL)
	if err != nil {
		t.Fatal(err)
	}
	err = c.WatchEach(context.Background(), WatchOptions{Types: []string{"vms"}}, func(WatchEvent) error { return nil })
	if ErrorCode(err) != "watch_unavailable" {
		t.Fatalf("a server without watches: %v", err)
	}
}
