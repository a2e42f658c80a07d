//go:build etcd

package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/heartbeat"
	"github.com/otherix/otherix/persistence/storetest"
)

// bigObserved is a node with vms running VMs and images cached images whose
// names are 128 bytes long, the longest allowed.
func bigObserved(vms, images int) messages.Heartbeat {
	now := time.Now().UTC()
	hb := messages.Heartbeat{AgentVersion: "0.2.0", Arch: "amd64",
		Capacity:     messages.NodeCapacity{CPUs: 256, MemoryMiB: 2 << 20, KVM: true, Accelerator: "kvm"},
		QEMUVersions: []string{"9.2.0"},
		Pools:        []messages.PoolStatus{{Name: "default", Path: "/var/lib/otherix/pools/default", TotalBytes: 8 << 40, FreeBytes: 3 << 40}}}
	for i := range vms {
		started := now.Add(-time.Duration(i) * time.Second)
		hb.VMs = append(hb.VMs, messages.VMObserved{ID: messages.NewID(), Phase: messages.PhaseRunning,
			ObservedGeneration: 1, Pid: 100_000 + i, StartedAt: &started, ObservedAt: now})
	}
	for i := range images {
		name := fmt.Sprintf("%04d-%s.qcow2", i, strings.Repeat("n", 128-5-6))
		hb.Images = append(hb.Images, messages.CachedImage{Pool: "default", Name: name, SizeBytes: 2 << 30,
			SHA256: strings.Repeat("ab", 32)})
	}
	return hb
}

// agentListener runs the real control plane (embedded etcd, actors) behind
// the agent-facing handler over mutual TLS, enrolls node name and returns
// the heartbeat URL, the gateway and an HTTP client with the node's
// certificate, made by the agent's own constructor.
func agentListener(t *testing.T, name string, interval time.Duration) (string, *gateway.Gateway, *http.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := storetest.New(t)
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	gw, err := gateway.Start(ctx, st, gateway.Config{Nodes: gateway.NodesConfig{HeartbeatInterval: interval}}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	srvCert, err := gw.CA().IssueServerCert([]string{"127.0.0.1"}, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(NewAgentAPI(gw, log))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert}, MinVersion: tls.VersionTLS12,
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: gw.CA().Pool()}
	ts.StartTLS()
	t.Cleanup(ts.Close)

	pair, roots := enrollNode(t, gw, name)
	hc, err := heartbeat.NewClient(pair, roots, ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	return heartbeat.URL(ts.URL), gw, hc
}

// TestHeartbeatOfABigNode: a node with 1,000 VMs and 1,000 long-named
// images (0.45 MB of heartbeat; 64 KiB used to be the limit, reached at ~350
// VMs) is accepted by the real control plane beat after beat, stays ready
// through several liveness passes, and is counted whole.
func TestHeartbeatOfABigNode(t *testing.T) {
	url, gw, hc := agentListener(t, "big", time.Second)
	hb := bigObserved(1000, 1000)
	loop := &heartbeat.Loop{Client: hc, URL: url, DefaultInterval: time.Second,
		Observe: func(context.Context) messages.Heartbeat { return hb }}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { _ = loop.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	// Five beats at a one-second interval span more than the three missed
	// intervals that would demote the node; it must be ready at each look.
	testutil.EventuallyReport(t, 30*time.Second, 50*time.Millisecond, "five accepted heartbeats", func() (bool, string) {
		s := loop.Status()
		if s.Failures > 0 {
			t.Fatalf("heartbeat refused: %v", s.LastError)
		}
		if s.Successes > 0 {
			n, err := gw.GetNode(t.Context(), "big")
			if err != nil || n.Phase != messages.NodeReady {
				t.Fatalf("node after %d heartbeats: %+v %v", s.Successes, n, err)
			}
		}
		return s.Successes >= 5, fmt.Sprintf("%+v", s)
	})
	n, err := gw.GetNode(t.Context(), "big")
	if err != nil || n.Phase != messages.NodeReady || n.Status.VMCount != 1000 || n.Status.ImageCount != 1000 {
		t.Fatalf("node: %+v %v", n, err)
	}
	if s := loop.Status(); s.OmittedVMs != 0 || s.OmittedImages != 0 {
		t.Fatalf("a 1,000-VM report was cut: %+v", s)
	}
}

// TestHeartbeatPartialReport: an agent whose report exceeds its budget
// sends what fits, VMs before images; the control plane accepts it, keeps
// the node ready and counts what was left out.
func TestHeartbeatPartialReport(t *testing.T) {
	url, gw, hc := agentListener(t, "partial", time.Minute)
	hb := bigObserved(300, 300)
	loop := &heartbeat.Loop{Client: hc, URL: url, Fit: heartbeat.Fitter{Budget: 64 << 10},
		Observe: func(context.Context) messages.Heartbeat { return hb }}
	if _, err := loop.Beat(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := loop.Status()
	if s.OmittedVMs != 0 || s.OmittedImages == 0 || s.OmittedImages == 300 {
		t.Fatalf("omitted %d vms, %d images; want all VMs and some images", s.OmittedVMs, s.OmittedImages)
	}
	n, err := gw.GetNode(t.Context(), "partial")
	if err != nil || n.Phase != messages.NodeReady || n.Status.VMCount != 300 || n.Status.ImageCount != 300 {
		t.Fatalf("node: %+v %v", n, err)
	}
}

// TestAgentListenerLimits: the heartbeat limit is the heartbeat's alone:
// enrollment and renewal keep 64 KiB, and a heartbeat over its own limit is
// refused with request_too_large, before its body is read.
func TestAgentListenerLimits(t *testing.T) {
	url, _, hc := agentListener(t, "limits", time.Minute)
	base := strings.TrimSuffix(url, heartbeat.Path)
	post := func(path string, size int) (int, string) {
		body := `{"pad":"` + strings.Repeat("x", size) + `"}`
		resp, err := hc.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Error.Code
	}
	for _, path := range []string{"/v1/enroll", "/v1/renew"} {
		if code, ec := post(path, AgentMaxBodyBytes); code != http.StatusRequestEntityTooLarge || ec != "request_too_large" {
			t.Errorf("%s with %d bytes: %d %s", path, AgentMaxBodyBytes, code, ec)
		}
	}
	if code, ec := post(heartbeat.Path, messages.HeartbeatMaxBytes); code != http.StatusRequestEntityTooLarge || ec != "request_too_large" {
		t.Errorf("heartbeat over its limit: %d %s", code, ec)
	}
	// Under its limit, the same junk is judged on its content.
	if code, ec := post(heartbeat.Path, 1<<20); code != http.StatusBadRequest || ec != "unknown_field" {
		t.Errorf("1 MiB heartbeat: %d %s", code, ec)
	}
}
