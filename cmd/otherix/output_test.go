package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

var now = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// apiVM is a VM as the API sends it.
const apiVM = `{"id":"01jvm0000000000000000000aa","name":"web-1","owner":"anonymous","generation":2,
"spec":{"image":{"url":"https://img.example/d.qcow2"},"cpus":2,"memory_mib":2048,"disk_gib":20,
"networks":[{"network":"backend","ip":"10.0.0.5"}],"power_state":"running"},
"status":{"phase":"running","node":"n1","observed_generation":2,"addresses":["10.0.0.5"],"pid":4242,
"started_at":"2026-05-01T11:58:00Z","observed_at":"2026-05-01T11:59:30Z",
"conditions":[{"type":"Ready","status":"True","last_transition_time":"2026-05-01T11:59:00Z"}],
"active_task":"01jtask00000000000000000aa"},
"created_at":"2026-05-01T11:55:00Z","updated_at":"2026-05-01T11:59:00Z","revision":7}`

func fixtureVM(t *testing.T) *messages.VM {
	t.Helper()
	var vm messages.VM
	if err := json.Unmarshal([]byte(apiVM), &vm); err != nil {
		t.Fatal(err)
	}
	return &vm
}

func emitVMs(t *testing.T, output string, vms []*messages.VM) string {
	t.Helper()
	var out bytes.Buffer
	a := &app{stdout: &out, output: output, now: func() time.Time { return now }}
	if err := a.emit(newItemList(vms), func(wide bool) [][]string { return vmRows(vms, wide, a.now()) }); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestVMTable(t *testing.T) {
	got := emitVMs(t, outputTable, []*messages.VM{fixtureVM(t)})
	want := "" +
		"NAME    PHASE     POWER     CPUS   MEMORY   DISK    NODE   AGE\n" +
		"web-1   running   running   2      2GiB     20GiB   n1     5m\n"
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestVMWide(t *testing.T) {
	vms := []*messages.VM{fixtureVM(t)}
	var out bytes.Buffer
	a := &app{stdout: &out, output: outputWide, now: func() time.Time { return now }}
	owners := map[string]string{"anonymous": "dev@example.com"}
	if err := a.emit(newItemList(vms), func(wide bool) [][]string { return vmRowsWithOwners(vms, wide, a.now(), owners) }); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	lines := strings.Split(strings.TrimSpace(got), "\n")
	wantHead := []string{"NAME", "PHASE", "POWER", "CPUS", "MEMORY", "DISK", "NODE", "AGE", "OWNER", "PID", "ADDRESSES", "ARCH", "ID", "IMAGE", "GENERATION", "TASK"}
	if head := strings.Fields(lines[0]); !reflect.DeepEqual(head, wantHead) {
		t.Errorf("head = %q", head)
	}
	wantRow := []string{"web-1", "running", "running", "2", "2GiB", "20GiB", "n1", "5m", "dev@example.com", "4242", "10.0.0.5", "<none>",
		"01jvm0000000000000000000aa", "https://img.example/d.qcow2", "2", "01jtask00000000000000000aa"}
	if row := strings.Fields(lines[1]); !reflect.DeepEqual(row, wantRow) {
		t.Errorf("row = %q", row)
	}
}

// TestJSONIsTheAPIAnswer checks that decoding into the SDK's types and
// re-encoding gives back what the API sent, field for field.
func TestJSONIsTheAPIAnswer(t *testing.T) {
	vm := fixtureVM(t)
	var out bytes.Buffer
	a := &app{stdout: &out, output: outputJSON}
	if err := a.emit(vm, nil); err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	_ = json.Unmarshal([]byte(apiVM), &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("json = %v\nwant %v", got, want)
	}
}

func TestListJSONAndYAML(t *testing.T) {
	vms := []*messages.VM{fixtureVM(t)}
	var asJSON struct {
		Items []messages.VM `json:"items"`
	}
	if err := json.Unmarshal([]byte(emitVMs(t, outputJSON, vms)), &asJSON); err != nil || len(asJSON.Items) != 1 || asJSON.Items[0].Name != "web-1" {
		t.Fatalf("json list = %+v, %v", asJSON, err)
	}
	y := emitVMs(t, outputYAML, vms)
	if !strings.HasPrefix(y, "items:\n- created_at:") || !strings.Contains(y, "memory_mib: 2048") {
		t.Errorf("yaml list:\n%s", y)
	}
	var asYAML struct {
		Items []messages.VM `json:"items"`
	}
	if err := yaml.Unmarshal([]byte(y), &asYAML); err != nil || !reflect.DeepEqual(asYAML.Items[0], asJSON.Items[0]) {
		t.Errorf("yaml does not read back as the json: %v", err)
	}
	if got := emitVMs(t, outputJSON, nil); got != "{\n  \"items\": []\n}\n" {
		t.Errorf("empty list = %q, want items as []", got)
	}
}

func TestTaskTables(t *testing.T) {
	task := &messages.Task{ID: "01jtask", Kind: messages.TaskVMCreate, State: messages.TaskFailed,
		Target: messages.Target{Kind: "vm", ID: "01jvm", Name: "web-1"}, Progress: 40,
		Error:     &messages.TaskError{Code: "no_schedulable_node", Message: "no node"},
		CreatedAt: now.Add(-90 * time.Second)}
	var out bytes.Buffer
	_ = writeTable(&out, taskRows([]*messages.Task{task}, true, now))
	want := "" +
		"TASK      KIND        STATE    VM      PROGRESS   AGE   MESSAGE   ERROR\n" +
		"01jtask   vm.create   failed   web-1   40%        90s   <none>    no node [no_schedulable_node]\n"
	if out.String() != want {
		t.Errorf("task table:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	_ = writeTable(&out, acceptedRows([]*client.Accepted{{Task: task}}))
	if !strings.HasPrefix(out.String(), "TASK      KIND        STATE    VM\n01jtask   vm.create   failed   web-1\n") {
		t.Errorf("accepted table:\n%s", out.String())
	}
}

func TestAge(t *testing.T) {
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{119 * time.Second, "119s"},
		{2 * time.Minute, "2m"},
		{5*time.Minute + 30*time.Second, "5m30s"},
		{90 * time.Minute, "90m"},
		{3*time.Hour + 20*time.Minute, "3h20m"},
		{30 * time.Hour, "30h"},
		{3*24*time.Hour + 4*time.Hour, "3d4h"},
		{100 * 24 * time.Hour, "100d"},
		{3 * 365 * 24 * time.Hour, "3y"},
	}
	for _, tt := range tests {
		if got := age(now.Add(-tt.ago), now); got != tt.want {
			t.Errorf("age(%s) = %q, want %q", tt.ago, got, tt.want)
		}
	}
	if got := age(time.Time{}, now); got != "<unknown>" {
		t.Errorf("zero time = %q", got)
	}
}

func TestDescribe(t *testing.T) {
	vm := fixtureVM(t)
	task := &messages.Task{ID: vm.Status.ActiveTask, Kind: messages.TaskVMStop, State: messages.TaskRunning,
		Progress: 50, Message: "powering down", CreatedAt: now.Add(-10 * time.Second)}
	var out bytes.Buffer
	if err := describeVM(&out, vm, task, "", now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Name:        web-1\n",
		"Generation:  2 (observed 2)\n",
		"  Networks:   backend (10.0.0.5)\n",
		"  Addresses:  10.0.0.5\n",
		"Active task:  01jtask00000000000000000aa vm.stop running 50%, started 10s ago: powering down\n",
		"Conditions:\n  TYPE   STATUS  REASON  AGE  MESSAGE\n  Ready  True    <none>  60s",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("describe lacks %q:\n%s", want, out.String())
		}
	}
}
