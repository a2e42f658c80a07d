//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/test/guest"
)

// TestGuestPoweroffShowsWhy: a guest that powers itself off (poweroff -f
// on its console) is stopped in the API with the reason, well before the
// next heartbeat would have said so (the interval here is 3 minutes: the agent
// pushes one at once), and `otherix vm describe` says why. Its power
// state becomes stopped, so nothing starts it again.
func TestGuestPoweroffShowsWhy(t *testing.T) {
	c := newClusterBeating(t, 3*time.Minute)
	c.mustCLI("vm", "create", "g1", "--image", c.imageURL, "--sha256", c.imageSHA,
		"--memory", "256Mi", "--disk", "1Gi", "--wait")
	v := c.vm("g1")

	con := c.startConsole("vm", "console", "g1")
	con.waitFor(t, guest.ReadyMarker+" instance-id="+v.ID, 2*time.Minute)
	testutil.EventuallyReport(t, 90*time.Second, 2*time.Second, "the guest's shell answers", func() (bool, string) {
		if !strings.Contains(con.out.String(), "up-42") {
			_, _ = io.WriteString(con.stdin, "echo up-$((6*7))\n")
		}
		return strings.Contains(con.out.String(), "up-42"), tail(con.out.String(), 2000)
	})

	typed := time.Now()
	if _, err := io.WriteString(con.stdin, "poweroff -f\n"); err != nil {
		t.Fatal(err)
	}
	// Far under the 3-minute interval, even on a loaded machine.
	stopped := c.waitPhase("g1", "stopped", 15*time.Second)
	t.Logf("poweroff -f typed → phase stopped in the API in %v", time.Since(typed))
	if !strings.Contains(stopped.Status.Message, "powered itself off") {
		t.Fatalf("status %+v; want a message saying the guest powered itself off", stopped.Status)
	}
	if got := eventTypes(t, c, "--type", "vm.stopped", "--object", "g1"); got != "vm.stopped" {
		t.Fatalf("stop events: %s", got)
	}
	if out := c.mustCLI("events", "--type", "vm.stopped", "--object", "g1"); !strings.Contains(out, "GuestShutdown") {
		t.Fatalf("the guest's power-off is not an event with its reason:\n%s", out)
	}

	var full struct {
		Spec struct {
			PowerState string `json:"power_state"`
		} `json:"spec"`
		Status struct {
			Conditions []struct {
				Type, Status, Reason string
			} `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(c.mustCLI("vm", "get", "g1", "-o", "json")), &full); err != nil {
		t.Fatal(err)
	}
	if full.Spec.PowerState != "stopped" {
		t.Fatalf("spec power_state %q; want stopped after the guest's power-off", full.Spec.PowerState)
	}
	found := false
	for _, cond := range full.Status.Conditions {
		found = found || cond.Type == "Interrupted" && cond.Status == "True" && cond.Reason == "GuestShutdown"
	}
	if !found {
		t.Fatalf("conditions %+v; want Interrupted True GuestShutdown", full.Status.Conditions)
	}
	desc := c.mustCLI("vm", "describe", "g1")
	for _, want := range []string{"Interrupted", "GuestShutdown", "the guest powered itself off"} {
		if !strings.Contains(desc, want) {
			t.Fatalf("vm describe lacks %q:\n%s", want, desc)
		}
	}

	// Started again by the user: running, power running, the condition
	// False.
	c.mustCLI("vm", "start", "g1", "--wait")
	if err := json.Unmarshal([]byte(c.mustCLI("vm", "get", "g1", "-o", "json")), &full); err != nil {
		t.Fatal(err)
	}
	found = false
	for _, cond := range full.Status.Conditions {
		found = found || cond.Type == "Interrupted" && cond.Status == "False"
	}
	if full.Spec.PowerState != "running" || !found {
		t.Fatalf("after start: power %q, conditions %+v; want running and Interrupted False", full.Spec.PowerState, full.Status.Conditions)
	}
	c.mustCLI("vm", "delete", "g1", "--force", "--wait")
}
