package main

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// existingVM is a VM as the API answers it, with the server's defaults.
func existingVM() *messages.VM {
	spec := messages.VMSpec{Image: messages.ImageSource{URL: "https://img.example/d.qcow2"}, CPUs: 2,
		MemoryMiB: 2048, DiskGiB: 20, UserData: "#cloud-config\n", PowerState: messages.PowerRunning}
	spec.Defaults()
	return &messages.VM{ID: "01jvm0000000000000000000aa", Name: "web-1", Spec: spec, Revision: 9}
}

func TestPlanVM(t *testing.T) {
	base := existingVM().Spec
	intp := func(n int) *int { return &n }
	strp := func(s string) *string { return &s }
	with := func(f func(*messages.VMSpec)) messages.VMSpec {
		s := base
		f(&s)
		return s
	}
	tests := []struct {
		name    string
		want    messages.VMSpec
		have    *messages.VM
		plan    applyPlan
		wantErr string
	}{
		{name: "missing is created", want: base, have: nil, plan: applyPlan{create: true}},
		{name: "same is unchanged", want: base, have: existingVM()},
		{name: "server defaults count as unchanged",
			want: messages.VMSpec{Image: base.Image, CPUs: 1, UserData: base.UserData},
			have: func() *messages.VM {
				vm := existingVM()
				vm.Spec.CPUs, vm.Spec.MemoryMiB, vm.Spec.DiskGiB = 1, 512, 10
				return vm
			}()},
		{name: "cpus and memory", want: with(func(s *messages.VMSpec) { s.CPUs, s.MemoryMiB = 4, 4096 }), have: existingVM(),
			plan: applyPlan{patch: &messages.VMSpecPatch{CPUs: intp(4), MemoryMiB: intp(4096)}, changes: []string{"cpus 2→4", "memory 2GiB→4GiB"}}},
		{name: "disk grows", want: with(func(s *messages.VMSpec) { s.DiskGiB = 30 }), have: existingVM(),
			plan: applyPlan{patch: &messages.VMSpecPatch{DiskGiB: intp(30)}, changes: []string{"disk 20GiB→30GiB"}}},
		{name: "user data cleared", want: with(func(s *messages.VMSpec) { s.UserData = "" }), have: existingVM(),
			plan: applyPlan{patch: &messages.VMSpecPatch{UserData: strp("")}, changes: []string{"user_data"}}},
		{name: "stop", want: with(func(s *messages.VMSpec) { s.PowerState = messages.PowerStopped }), have: existingVM(),
			plan: applyPlan{power: messages.PowerStopped, changes: []string{"power running→stopped"}}},
		{name: "patch and start", want: with(func(s *messages.VMSpec) { s.CPUs = 3 }),
			have: func() *messages.VM { vm := existingVM(); vm.Spec.PowerState = messages.PowerStopped; return vm }(),
			plan: applyPlan{patch: &messages.VMSpecPatch{CPUs: intp(3)}, power: messages.PowerRunning,
				changes: []string{"cpus 2→3", "power stopped→running"}}},
		{name: "disk shrinks", want: with(func(s *messages.VMSpec) { s.DiskGiB = 10 }), have: existingVM(), wantErr: "a disk only grows"},
		{name: "image", want: with(func(s *messages.VMSpec) { s.Image.URL = "https://img.example/e.qcow2" }), have: existingVM(),
			wantErr: "spec.image cannot change on an existing VM"},
		{name: "several immutable", want: with(func(s *messages.VMSpec) {
			s.Arch, s.Node, s.Networks = messages.ArchARM64, "n2", []messages.NICSpec{{Network: "backend"}}
		}), have: existingVM(), wantErr: "spec.arch, spec.node, spec.networks cannot change"},
		{name: "invalid", want: with(func(s *messages.VMSpec) { s.CPUs = 999 }), have: existingVM(), wantErr: "spec.cpus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planVM(tt.want, tt.have)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.plan) {
				t.Fatalf("plan = %+v (patch %+v), want %+v (patch %+v)", got, got.patch, tt.plan, tt.plan.patch)
			}
			if got.noop() != (!tt.plan.create && tt.plan.patch == nil && tt.plan.power == "") {
				t.Errorf("noop = %v", got.noop())
			}
		})
	}
}

func TestManifestCanonicalForm(t *testing.T) {
	p := writeManifest(t, `apiVersion: otherix.dev/v1
kind: VM
metadata:
  name: web-1
spec:
  image: {url: https://img.example/d.qcow2}
  arch: arm64
---
apiVersion: otherix.io/v1
kind: vm
name: web-2
spec: {image: {url: https://img.example/d.qcow2}}
`)
	res, err := loadManifests([]string{p}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].ref() != "vm/web-1" || res[0].spec.Arch != "arm64" || res[1].ref() != "vm/web-2" {
		t.Fatalf("resources = %+v", res)
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"usage", usageError(errors.New("bad flag")), exitUsage},
		{"wrapped usage", errors.Join(usageError(errors.New("x"))), exitUsage},
		{"task failed", taskOutcome(&messages.Task{ID: "t", State: messages.TaskFailed,
			Error: &messages.TaskError{Code: "no_schedulable_node", Message: "no node"}}), exitFailed},
		{"task cancelled", taskOutcome(&messages.Task{ID: "t", State: messages.TaskCancelled}), exitFailed},
		{"api error", &client.APIError{Status: 409, Code: "vm_busy", Message: "busy"}, exitFailed},
		{"runtime", errors.New("boom"), exitFailed},
		{"manifest", &manifestError{problems: []string{"a", "b"}}, exitFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err); got != tt.want {
				t.Fatalf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
	if taskOutcome(&messages.Task{State: messages.TaskSuccess}) != nil {
		t.Fatal("a successful task is an error")
	}
}

func TestProgressDisplay(t *testing.T) {
	task := &messages.Task{ID: "t1", Kind: messages.TaskVMCreate, State: messages.TaskRunning, Progress: 40,
		Message: "downloading image", Target: messages.Target{Kind: "vm", Name: "web-1"}}
	if got, want := progressBar(task), "[============>                 ]  40% vm.create web-1: running (downloading image)"; got != want {
		t.Errorf("bar:\n%q\nwant\n%q", got, want)
	}
	done := *task
	done.State, done.Progress, done.Message = messages.TaskSuccess, 90, ""
	if got := progressBar(&done); !strings.HasPrefix(got, "[==============================] 100%") {
		t.Errorf("finished bar: %q", got)
	}

	// On a terminal: one line redrawn in place, ended when the task ends.
	var tty bytes.Buffer
	a := &app{stderr: &tty, stderrTTY: func() bool { return true }}
	a.reportProgress(nil, task)
	a.reportProgress(task, task) // unchanged: nothing drawn
	a.reportProgress(task, &done)
	if got := tty.String(); strings.Count(got, "\r") != 2 || !strings.HasSuffix(got, "\n") || strings.Count(got, "\n") != 1 {
		t.Errorf("terminal output %q", got)
	}

	// Elsewhere: a plain line per change.
	var plain bytes.Buffer
	a = &app{stderr: &plain, stderrTTY: func() bool { return false }}
	a.reportProgress(nil, task)
	if got, want := plain.String(), "task t1 vm.create web-1: running 40% (downloading image)\n"; got != want {
		t.Errorf("plain output %q, want %q", got, want)
	}
}
