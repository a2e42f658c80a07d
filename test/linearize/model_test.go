package linearize

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op is a hand-made operation: client, call and return times, input, output.
func op(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	if out.Result == Unknown {
		ret = math.MaxInt64
	}
	return porcupine.Operation{ClientId: client, Call: call, Return: ret, Input: in, Output: out}
}

func TestHistories(t *testing.T) {
	create := func(c int, call, ret int64, name, id string) porcupine.Operation {
		return op(c, call, ret, Input{Op: Create, Name: name}, Output{Result: OK, ID: id, CPUs: 1})
	}
	update := func(c int, call, ret int64, name string, cpus int, res string) porcupine.Operation {
		return op(c, call, ret, Input{Op: Update, Name: name, CPUs: cpus}, Output{Result: res, CPUs: cpus})
	}
	get := func(c int, call, ret int64, name, id string, cpus int) porcupine.Operation {
		if id == "" {
			return op(c, call, ret, Input{Op: Get, Name: name}, Output{Result: Missing})
		}
		return op(c, call, ret, Input{Op: Get, Name: name}, Output{Result: OK, ID: id, CPUs: cpus})
	}
	del := func(c int, call, ret int64, name, res string) porcupine.Operation {
		return op(c, call, ret, Input{Op: Delete, Name: name}, Output{Result: res})
	}
	for _, c := range []struct {
		name string
		ok   bool
		ops  []porcupine.Operation
	}{
		{"sequential", true, []porcupine.Operation{
			create(0, 0, 1, "a", "id1"), update(0, 2, 3, "a", 4, OK), get(1, 4, 5, "a", "id1", 4),
			del(0, 6, 7, "a", OK), get(1, 8, 9, "a", "", 0), create(0, 10, 11, "a", "id2"),
		}},
		// The cached read of the actor that served the stale row: after an
		// update returned on one replica, a read that began later on
		// another answers the value before it.
		{"stale read after an acknowledged update", false, []porcupine.Operation{
			create(0, 0, 1, "a", "id1"), get(1, 2, 3, "a", "id1", 1),
			update(0, 4, 5, "a", 4, OK), get(1, 6, 7, "a", "id1", 1),
		}},
		{"the same reads concurrent with the update", true, []porcupine.Operation{
			create(0, 0, 1, "a", "id1"), get(1, 2, 3, "a", "id1", 1),
			update(0, 4, 8, "a", 4, OK), get(1, 5, 6, "a", "id1", 1), get(1, 7, 9, "a", "id1", 4),
		}},
		{"a read goes back", false, []porcupine.Operation{
			create(0, 0, 1, "a", "id1"), update(0, 2, 20, "a", 4, OK),
			get(1, 3, 4, "a", "id1", 4), get(1, 5, 6, "a", "id1", 1),
		}},
		{"an acknowledged create lost", false, []porcupine.Operation{
			create(0, 0, 1, "a", "id1"), get(1, 2, 3, "a", "", 0),
		}},
		{"two creates of one name acknowledged", false, []porcupine.Operation{
			create(0, 0, 5, "a", "id1"), create(1, 1, 6, "a", "id2"),
		}},
		{"a deleted VM read back", false, []porcupine.Operation{
			create(0, 0, 1, "a", "id1"), del(0, 2, 3, "a", OK), get(1, 4, 5, "a", "id1", 1),
		}},
		// An unknown create may have happened: a later read pins its id.
		{"unknown create seen later", true, []porcupine.Operation{
			op(0, 0, 0, Input{Op: Create, Name: "a"}, Output{Result: Unknown}),
			get(1, 5, 6, "a", "id9", 1), update(1, 7, 8, "a", 2, OK), get(2, 9, 10, "a", "id9", 2),
		}},
		{"unknown create that never happened", true, []porcupine.Operation{
			op(0, 0, 0, Input{Op: Create, Name: "a"}, Output{Result: Unknown}),
			get(1, 5, 6, "a", "", 0), get(1, 7, 8, "a", "", 0),
		}},
		{"an unknown create's id changes", false, []porcupine.Operation{
			op(0, 0, 0, Input{Op: Create, Name: "a"}, Output{Result: Unknown}),
			get(1, 5, 6, "a", "id9", 1), get(1, 7, 8, "a", "id8", 1),
		}},
		{"unknown delete: either", true, []porcupine.Operation{
			create(0, 0, 1, "a", "id1"), op(0, 2, 0, Input{Op: Delete, Name: "a"}, Output{Result: Unknown}),
			get(1, 3, 4, "a", "id1", 1), get(1, 5, 6, "a", "", 0),
		}},
		// Names are independent, and a list reads each of them.
		{"list per name", true, []porcupine.Operation{
			create(0, 0, 1, "a", "id1"), create(1, 0, 1, "b", "id2"),
			op(2, 2, 3, Input{Op: List, Name: "a"}, Output{Result: OK, ID: "id1", CPUs: 1}),
			op(2, 2, 3, Input{Op: List, Name: "b"}, Output{Result: OK, ID: "id2", CPUs: 1}),
			op(2, 2, 3, Input{Op: List, Name: "c"}, Output{Result: Missing}),
		}},
		{"list misses an acknowledged create", false, []porcupine.Operation{
			create(0, 0, 1, "a", "id1"), create(1, 0, 1, "b", "id2"),
			op(2, 2, 3, Input{Op: List, Name: "a"}, Output{Result: OK, ID: "id1", CPUs: 1}),
			op(2, 2, 3, Input{Op: List, Name: "b"}, Output{Result: Missing}),
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			err := Check(c.ops, 10*time.Second, dir)
			if (err == nil) != c.ok {
				t.Fatalf("linearizable: %v, want %v", err, c.ok)
			}
			if err != nil {
				path := filepath.Join(dir, "linearizability.html")
				if !strings.Contains(err.Error(), path) {
					t.Fatalf("error %q does not name the visualization %s", err, path)
				}
				if b, rerr := os.ReadFile(path); rerr != nil || len(b) == 0 {
					t.Fatalf("visualization: %v", rerr)
				}
			}
		})
	}
}

// TestRecorder: an unknown outcome is recorded as never returning, and a
// list as one read per name.
func TestRecorder(t *testing.T) {
	h := NewHistory()
	c := h.Now()
	h.Add(0, Input{Op: Create, Name: "a"}, c, Output{Result: Unknown}, h.Now())
	h.AddList(1, []string{"a", "b"}, h.Now(), map[string]Output{"a": {Result: OK, ID: "x", CPUs: 1}}, h.Now())
	ops := h.Operations()
	if len(ops) != 3 || ops[0].Return != math.MaxInt64 || ops[2].Output.(Output).Result != Missing {
		t.Fatalf("recorded %+v", ops)
	}
	if err := Check(ops, 10*time.Second, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if n := h.Counts()["list missing"]; n != 1 {
		t.Fatalf("counts %v", h.Counts())
	}
}
