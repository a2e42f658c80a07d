package apierror

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/otherix/otherix/messages"
)

// fuzzBodyLimit is small so that the fuzzer reaches the limit.
const fuzzBodyLimit = 2048

// decodeFuzz runs DecodeStrict on body as a handler sees it, behind the
// body limit, and checks what must hold for any input: the error is a
// client error with a stable code (never internal), and a body that
// decodes is one valid JSON value within the limit whose value survives a
// strict round trip.
func decodeFuzz[T any](t *testing.T, body []byte) {
	t.Helper()
	var v T
	err := DecodeStrict(http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(bytes.NewReader(body)), fuzzBodyLimit), &v)
	if err != nil {
		var me *messages.Error
		if !errors.As(err, &me) {
			t.Fatalf("error %v (%T) is not a *messages.Error", err, err)
		}
		switch me.Kind {
		case messages.KindInvalid, messages.KindTooLarge:
		default:
			t.Fatalf("error kind %v (code %s) for a bad body", me.Kind, me.Code)
		}
		if me.Code == "" {
			t.Fatalf("error without a code: %v", me)
		}
		return
	}
	if len(body) > fuzzBodyLimit {
		t.Fatalf("a %d-byte body passed a %d-byte limit", len(body), fuzzBodyLimit)
	}
	if !json.Valid(body) {
		t.Fatalf("accepted a body that is not one JSON value: %q", body)
	}
	enc, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	var again T
	if err := DecodeStrict(bytes.NewReader(enc), &again); err != nil {
		t.Fatalf("strict decode of our own encoding %s: %v", enc, err)
	}
	if enc2, _ := json.Marshal(again); !bytes.Equal(enc, enc2) {
		t.Fatalf("round trip changed the value:\n%s\n%s", enc, enc2)
	}
}

var strictJSONSeeds = []string{
	`{"name":"web-1","spec":{"image":{"url":"https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"},"cpus":2,"memory_mib":1024,"disk_gib":10,"user_data":"#cloud-config\n"}}`,
	`{"name":"a","spec":{"cpus":1}} {"name":"b"}`,
	`{"name":"a","nmae":"b"}`,
	`{"name":"a","name":"b"}`,
	`{"spec":{"cpus":"2"}}`,
	`[1,2,3]`,
	`{"name":"\u0000\ud800"}`,
	``,
	`{"name":`,
}

// FuzzStrictJSON: both APIs' strict body decoding, on the VM create body.
func FuzzStrictJSON(f *testing.F) {
	for _, s := range strictJSONSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { decodeFuzz[messages.CreateVMRequest](t, body) })
}

// FuzzHeartbeatDecode: what a node (or whoever holds its key) sends as a
// heartbeat, decoded as the heartbeat handler does.
func FuzzHeartbeatDecode(f *testing.F) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	hb := messages.Heartbeat{
		AgentVersion: "v1.2.3", Endpoint: "https://10.0.0.5:7444", Arch: "amd64",
		Capacity:     messages.NodeCapacity{KVM: false, KVMReason: "no /dev/kvm", Accelerator: "tcg"},
		QEMUVersions: []string{"qemu-system-x86_64 7.2.22"},
		VMs:          []messages.VMObserved{{ID: messages.NewID(), Phase: messages.PhaseRunning, Pid: 4242, ObservedAt: now}},
	}
	seed, _ := json.Marshal(hb)
	f.Add(seed)
	f.Add([]byte(`{"agent_version":"x","vms":[{"id":"x","phase":"running","pid":-1}],"images":null}`))
	f.Add([]byte(`{"agent_version":"x","overlay":{"public_key":"","endpoint":"[::1]:1"},"extra":1}`))
	f.Fuzz(func(t *testing.T, body []byte) { decodeFuzz[messages.Heartbeat](t, body) })
}
