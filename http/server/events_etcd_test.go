//go:build etcd

package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
	"github.com/otherix/otherix/watch"
)

// eventNames lists events as type:object-name.
func eventNames(evs []*messages.Event) map[string]*messages.Event {
	out := make(map[string]*messages.Event, len(evs))
	for _, e := range evs {
		out[e.Type+":"+e.Object.Name] = e
	}
	return out
}

// TestEventsRBAC: a developer lists the events of their own VMs and of
// nodes, never another user's, which is not found when asked for by id
// and never appears on their watch stream; an admin sees everything. Bad
// filters are refused with their codes.
func TestEventsRBAC(t *testing.T) {
	e := startWatchEnv(t, 0, 0)
	ctx := t.Context()
	const devPassword = "developer-password-long-1"
	e.createUser("dev@example.com", string(security.RoleDeveloper), devPassword)
	devTok := e.bearerOf("dev@example.com", devPassword)
	dev := e.client(devTok)

	theirs, err := e.admin.CreateVM(ctx, vmRequest("theirs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.CreateVM(ctx, vmRequest("mine")); err != nil {
		t.Fatal(err)
	}
	nodeEv := messages.NewEvent(messages.EventNodeUnreachable, messages.ReasonHeartbeatMissed,
		messages.EventObject{Kind: "node", ID: messages.NewID(), Name: "n1"}, "", "no heartbeat", e.st.Now())
	if err := e.st.Commit(ctx, store.AddEvents(store.NewTxn(), nodeEv)); err != nil {
		t.Fatal(err)
	}

	var rev int64
	devEvents, _, err := dev.ListEvents(ctx, client.EventFilter{}, client.ListOptions{Revision: &rev})
	if err != nil || rev == 0 {
		t.Fatalf("developer's list: %v (revision %d)", err, rev)
	}
	got := eventNames(devEvents)
	if len(got) != 2 || got["vm.created:mine"] == nil || got["node.unreachable:n1"] == nil {
		t.Fatalf("developer sees %v", got)
	}
	all, _, err := e.admin.ListEvents(ctx, client.EventFilter{}, client.ListOptions{})
	if err != nil || len(all) != 3 || eventNames(all)["vm.created:theirs"] == nil {
		t.Fatalf("admin sees %v, %v", eventNames(all), err)
	}
	if evs, _, err := dev.ListEvents(ctx, client.EventFilter{Object: "theirs"}, client.ListOptions{}); err != nil || len(evs) != 0 {
		t.Fatalf("developer asking for another's vm by name: %v, %v", eventNames(evs), err)
	}
	if evs, _, err := dev.ListEvents(ctx, client.EventFilter{Type: "node", Since: "10m"}, client.ListOptions{}); err != nil || len(evs) != 1 {
		t.Fatalf("developer's node events: %v, %v", eventNames(evs), err)
	}
	theirEv := eventNames(all)["vm.created:theirs"]
	if theirEv.Object.ID != theirs.VM.ID {
		t.Fatalf("their event names %+v", theirEv.Object)
	}
	_, err = dev.GetEvent(ctx, theirEv.ID)
	wantCode(t, err, http.StatusNotFound, "not_found")
	if got, err := e.admin.GetEvent(ctx, theirEv.ID); err != nil || got.ID != theirEv.ID || got.Revision != theirEv.Revision {
		t.Fatalf("admin's get: %+v, %v", got, err)
	}

	// Refusals.
	for _, tc := range []struct {
		query url.Values
		code  string
	}{
		{url.Values{"type": {"vms"}}, "invalid_event_type"},
		{url.Values{"since": {"yesterday"}}, "invalid_since"},
		{url.Values{"limit": {"0"}}, "invalid_limit"},
		{url.Values{"cursor": {"%%%"}}, "invalid_cursor"},
	} {
		status, body := e.rawGet("/v1/events?"+tc.query.Encode(), devTok)
		var env struct {
			Error struct{ Code string } `json:"error"`
		}
		if err := json.Unmarshal(body, &env); err != nil || status != http.StatusBadRequest || env.Error.Code != tc.code {
			t.Errorf("%s: %d %s, want 400 %s", tc.query.Encode(), status, body, tc.code)
		}
	}

	// The watch stream: from the list's revision, the developer's stream
	// carries their new VM's event and not the one created before it.
	stream, err := e.streamer(devTok).Watch(ctx, client.WatchOptions{Types: []string{"events"}, Since: rev})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if _, err := e.admin.CreateVM(ctx, vmRequest("theirs-2")); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.CreateVM(ctx, vmRequest("mine-2")); err != nil {
		t.Fatal(err)
	}
	seen := changes(t, stream, func(got []client.WatchEvent) bool {
		if len(got) == 0 {
			return false
		}
		var ev messages.Event
		_ = json.Unmarshal(got[len(got)-1].Data, &ev)
		return ev.Object.Name == "mine-2"
	})
	for _, we := range seen {
		var ev messages.Event
		if err := json.Unmarshal(we.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if we.Type != "added" || ev.Owner != "" && ev.Object.Name != "mine-2" || ev.Revision != we.ID {
			t.Fatalf("developer's stream carried %s %+v (id %d)", we.Type, ev, we.ID)
		}
	}
	// The admin's stream from the same revision carries both.
	adminStream, err := e.streamer(e.bearerOf(adminEmail, adminPassword)).Watch(context.Background(),
		client.WatchOptions{Types: []string{"events"}, Since: rev})
	if err != nil {
		t.Fatal(err)
	}
	defer adminStream.Close()
	both := changes(t, adminStream, func(got []client.WatchEvent) bool { return len(got) == 2 })
	var first messages.Event
	_ = json.Unmarshal(both[0].Data, &first)
	if first.Object.Name != "theirs-2" {
		t.Fatalf("admin's stream starts with %+v", first)
	}
}

// TestFleetGauges: /metrics carries the fleet's counts from the watch hub
// (VMs by phase, with every known phase present) and the streams open.
func TestFleetGauges(t *testing.T) {
	e := startWatchEnv(t, 0, 0)
	ctx := t.Context()
	if _, err := e.admin.CreateVM(ctx, vmRequest("counted")); err != nil {
		t.Fatal(err)
	}
	tok := e.bearerOf(adminEmail, adminPassword)
	stream, err := e.streamer(tok).Watch(ctx, client.WatchOptions{Types: []string{"vms"}})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	scrape := func() string {
		status, body := e.rawGet("/metrics", tok)
		if status != http.StatusOK {
			t.Fatalf("/metrics: %d", status)
		}
		return string(body)
	}
	testutil.EventuallyReport(t, 30*time.Second, 20*time.Millisecond, "fleet gauges", func() (bool, string) {
		m := scrape()
		vms := 0.0
		for _, phase := range watch.VMPhases {
			v, ok := gauge(m, `otherix_vms{phase="`+phase+`"}`)
			if !ok {
				return false, m
			}
			vms += v
		}
		up, _ := gauge(m, "otherix_fleet_counts_up")
		clients, _ := gauge(m, "otherix_watch_clients")
		_, nodes := gauge(m, `otherix_nodes{state="ready"}`)
		_, tasks := gauge(m, `otherix_tasks{state="pending"}`)
		_, jobs := gauge(m, "otherix_job_queue_depth")
		return up == 1 && vms == 1 && clients == 1 && nodes && tasks && jobs, m
	})
}

// gauge reads one sample of a Prometheus exposition.
func gauge(exposition, series string) (float64, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}
