package agentclient_test

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/http/agentclient/agenttest"
	"github.com/otherix/otherix/messages"
)

func clientFor(p *agenttest.PKI, cert tls.Certificate) *agentclient.Client {
	return agentclient.New(p.CA.Pool(), func() (*tls.Certificate, error) { return &cert, nil })
}

func request(id string) messages.AgentTaskRequest {
	return messages.AgentTaskRequest{ID: id, Kind: messages.TaskVMCreate, VM: messages.AgentVM{ID: "vm1", Name: "web",
		Generation: 3, Spec: messages.VMSpec{CPUs: 1, MemoryMiB: 512, DiskGiB: 1, PowerState: messages.PowerRunning,
			Arch: messages.ArchAMD64, Image: messages.ImageSource{URL: "https://example.test/img.qcow2"}}}}
}

func TestSubmitAndLongPoll(t *testing.T) {
	p := agenttest.NewPKI(t)
	a := agenttest.Start(t, p, "n1", func(req messages.AgentTaskRequest) agenttest.Result {
		return agenttest.Result{VM: agenttest.VMAfter(req), After: 200 * time.Millisecond}
	})
	c := clientFor(p, p.ClientCert(t))
	n := agentclient.Node{Name: "n1", Endpoint: a.URL}
	ctx := t.Context()
	first, err := c.Submit(ctx, n, request("job1"))
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != "job1" || first.State != messages.TaskRunning {
		t.Fatalf("submit: %+v", first)
	}
	again, err := c.Submit(ctx, n, request("job1"))
	if err != nil || again.ID != "job1" || a.Submits("job1") != 2 {
		t.Fatalf("resubmit: %+v %v (submits %d)", again, err, a.Submits("job1"))
	}
	start := time.Now()
	done, err := c.Task(ctx, n, "job1", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != messages.TaskSuccess || done.VM == nil || done.VM.Pid != 4242 || done.VM.ObservedGeneration != 3 {
		t.Fatalf("long poll: %+v", done)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("long poll did not answer when the task ended")
	}
}

func TestReadsAndErrors(t *testing.T) {
	p := agenttest.NewPKI(t)
	a := agenttest.Start(t, p, "n1", nil)
	c := clientFor(p, p.ClientCert(t))
	n := agentclient.Node{Name: "n1", Endpoint: a.URL}
	ctx := t.Context()
	if v, err := c.VM(ctx, n, "vm1"); err != nil || v.ID != "vm1" || v.Phase != messages.PhaseRunning {
		t.Fatalf("vm: %+v %v", v, err)
	}
	if v, err := c.Pause(ctx, n, "vm1"); err != nil || v.Phase != messages.PhasePaused {
		t.Fatalf("pause: %+v %v", v, err)
	}
	if v, err := c.Resume(ctx, n, "vm1"); err != nil || v.Phase != messages.PhaseRunning {
		t.Fatalf("resume: %+v %v", v, err)
	}
	if b, err := c.Log(ctx, n, "vm1", 100); err != nil || string(b) != "serial of vm1 tail=100" {
		t.Fatalf("log: %q %v", b, err)
	}
	_, err := c.VM(ctx, n, "missing")
	var me *messages.Error
	if !errors.As(err, &me) || me.Kind != messages.KindNotFound || me.Code != "not_found" || agentclient.Retryable(err) {
		t.Fatalf("missing vm: %v", err)
	}
	_, err = c.Task(ctx, n, "nope", 0)
	if messages.KindOf(err) != messages.KindNotFound {
		t.Fatalf("missing task: %v", err)
	}
	a.SetDown(true)
	_, err = c.Submit(ctx, n, request("job2"))
	if !errors.Is(err, agentclient.ErrAgentUnavailable) || !agentclient.Retryable(err) || messages.KindOf(err) != messages.KindUnavailable {
		t.Fatalf("503: %v", err)
	}
	if errors.Is(err, agentclient.ErrUnreachable) {
		t.Fatalf("503 counted as unreachable: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	p := agenttest.NewPKI(t)
	c := clientFor(p, p.ClientCert(t))
	// A closed port: nothing listens there any more.
	a := agenttest.Start(t, p, "n2", nil)
	dead := a.URL
	a.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := c.Submit(ctx, agentclient.Node{Name: "n2", Endpoint: dead}, request("j"))
	if !errors.Is(err, agentclient.ErrUnreachable) || !agentclient.Retryable(err) {
		t.Fatalf("closed port: %v", err)
	}
	_, err = c.Submit(ctx, agentclient.Node{Name: "n2", Endpoint: "http://" + strings.TrimPrefix(dead, "https://")}, request("j"))
	if !errors.Is(err, agentclient.ErrNoEndpoint) {
		t.Fatalf("http endpoint: %v", err)
	}
}

func TestMutualTLS(t *testing.T) {
	p := agenttest.NewPKI(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	t.Run("server certificate of another node", func(t *testing.T) {
		a := agenttest.StartWithCert(t, p, p.NodeCert(t, "n2"), "n1", nil)
		c := clientFor(p, p.ClientCert(t))
		_, err := c.Submit(ctx, agentclient.Node{Name: "n1", Endpoint: a.URL}, request("j"))
		if !errors.Is(err, agentclient.ErrUntrustedAgent) || !errors.Is(err, agentclient.ErrUnreachable) {
			t.Fatalf("want untrusted agent, got %v", err)
		}
		if a.Submits("j") != 0 {
			t.Fatal("the request reached the agent")
		}
	})
	t.Run("server of another CA", func(t *testing.T) {
		other := agenttest.NewPKI(t)
		a := agenttest.Start(t, other, "n1", nil)
		c := clientFor(p, p.ClientCert(t))
		_, err := c.Submit(ctx, agentclient.Node{Name: "n1", Endpoint: a.URL}, request("j"))
		if !errors.Is(err, agentclient.ErrUntrustedAgent) {
			t.Fatalf("want untrusted agent, got %v", err)
		}
	})
	for name, cert := range map[string]tls.Certificate{
		"node certificate as client":     p.NodeCert(t, "n3"),
		"client certificate of other CA": agenttest.NewPKI(t).ClientCert(t),
	} {
		t.Run(name, func(t *testing.T) {
			a := agenttest.Start(t, p, "n1", nil)
			c := clientFor(p, cert)
			_, err := c.Submit(ctx, agentclient.Node{Name: "n1", Endpoint: a.URL}, request("j"))
			if err == nil || !errors.Is(err, agentclient.ErrUnreachable) {
				t.Fatalf("want refused handshake, got %v", err)
			}
			if a.Submits("j") != 0 {
				t.Fatal("the request reached the agent")
			}
		})
	}
	t.Run("rotated client certificate is used", func(t *testing.T) {
		a := agenttest.Start(t, p, "n1", nil)
		good := p.ClientCert(t)
		bad := p.NodeCert(t, "n3")
		cur := &bad
		c := agentclient.New(p.CA.Pool(), func() (*tls.Certificate, error) { return cur, nil })
		n := agentclient.Node{Name: "n1", Endpoint: a.URL}
		if _, err := c.Submit(ctx, n, request("r")); err == nil {
			t.Fatal("bad certificate accepted")
		}
		cur = &good
		if _, err := c.Submit(ctx, n, request("r")); err != nil {
			t.Fatalf("after rotation: %v", err)
		}
	})
}
