// Package linearize checks histories of VM registry operations, recorded
// against a replicated control plane, for linearizability: a model of the
// registry (what each VM name holds) for github.com/anishathalye/porcupine,
// a recorder that concurrent clients write their operations into, and the
// check, which leaves porcupine's visualization behind when it fails.
//
// The model keeps, per VM name, whether it exists, its id and its cpus.
// Operations on one name never constrain another's, so the history is
// checked one name at a time (porcupine partitions); a list, which reads
// every name at once, is recorded as one read per name it could have named.
// That is a projection of the whole history: every violation it finds is
// real, and it finds every stale or lost value of one name.
package linearize

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// The operations of the registry.
const (
	// Create makes a VM of a name that no VM has (cpus 1).
	Create = "create"
	// Update sets the cpus of the VM of a name.
	Update = "update"
	// Stop asks for a VM to be stopped: it changes nothing the model keeps.
	Stop = "stop"
	// Delete removes the VM of a name; it is recorded until its task is
	// seen to end, since the row goes when the task ends.
	Delete = "delete"
	// Get reads the VM of a name.
	Get = "get"
	// List reads every VM; recorded as one List per name (see the package).
	List = "list"
)

// Outcomes. Unknown is an operation whose effect nobody saw (a timeout, a
// reset connection, a 5xx, a replica killed mid-request): per porcupine's
// convention its return is recorded as the end of time, and the model lets
// it take effect or not.
const (
	OK      = "ok"
	Missing = "missing" // 404: no VM has that name
	Exists  = "exists"  // a create refused: the name is taken
	Busy    = "busy"    // refused with no effect: a task of the VM is in progress, or an update lost every replan
	Failed  = "failed"  // a delete whose task ended without deleting
	Unknown = "unknown"
)

// Input is what a client asked.
type Input struct {
	Op   string
	Name string
	// CPUs is what an update sets.
	CPUs int
}

// Output is what the client was answered. ID and CPUs are the VM's as the
// answer showed it (a read's, or a create's or update's answer).
type Output struct {
	Result string
	ID     string
	CPUs   int
}

// CreateCPUs is the cpus every create in the history asks for.
const CreateCPUs = 1

// State is one name's: whether a VM has it, the VM's id ("" while only an
// unknown create made it) and cpus.
type State struct {
	Exists bool
	ID     string
	CPUs   int
}

func (s State) String() string {
	if !s.Exists {
		return "absent"
	}
	id := s.ID
	if id == "" {
		id = "?"
	}
	return fmt.Sprintf("%s cpus=%d", id, s.CPUs)
}

// step returns every state the operation can leave from s; none means it
// cannot have happened from s.
func step(s State, in Input, out Output) []State {
	if out.Result == Unknown {
		return unknown(s, in)
	}
	switch in.Op {
	case Create:
		switch {
		case out.Result == OK && !s.Exists:
			return []State{{Exists: true, ID: out.ID, CPUs: CreateCPUs}}
		case out.Result == Exists && s.Exists:
			return []State{s}
		}
	case Update:
		switch {
		case out.Result == OK && s.Exists && out.CPUs == in.CPUs:
			if n, ok := pin(s, out.ID); ok {
				n.CPUs = in.CPUs
				return []State{n}
			}
		case out.Result == Busy && s.Exists:
			// Refused after losing every replan to other writers.
			return []State{s}
		case out.Result == Missing && !s.Exists:
			return []State{s}
		}
	case Stop:
		switch {
		case (out.Result == OK || out.Result == Busy) && s.Exists:
			return []State{s}
		case out.Result == Missing && !s.Exists:
			return []State{s}
		}
	case Delete:
		switch {
		case out.Result == OK && s.Exists:
			return []State{{}}
		case (out.Result == Busy || out.Result == Failed) && s.Exists:
			return []State{s}
		case out.Result == Missing && !s.Exists:
			return []State{s}
		}
	case Get, List:
		switch {
		case out.Result == OK && s.Exists && out.CPUs == s.CPUs:
			if n, ok := pin(s, out.ID); ok {
				return []State{n}
			}
		case out.Result == Missing && !s.Exists:
			return []State{s}
		}
	}
	return nil
}

// pin matches an id an answer showed with the state's, learning it when an
// unknown create left it open.
func pin(s State, id string) (State, bool) {
	switch {
	case id == "":
		return s, true
	case s.ID == "":
		s.ID = id
		return s, true
	}
	return s, s.ID == id
}

// unknown is every state an operation of unknown outcome can leave: it may
// not have happened, or happened with any answer it could have had.
func unknown(s State, in Input) []State {
	switch in.Op {
	case Create:
		if !s.Exists {
			return []State{s, {Exists: true, CPUs: CreateCPUs}}
		}
	case Update:
		if s.Exists {
			n := s
			n.CPUs = in.CPUs
			return []State{s, n}
		}
	case Delete:
		if s.Exists {
			return []State{s, {}}
		}
	}
	return []State{s}
}

// Model is the VM registry's sequential specification, one name per
// partition.
var Model = (&porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byName := map[string][]porcupine.Operation{}
		for _, op := range history {
			n := op.Input.(Input).Name
			byName[n] = append(byName[n], op)
		}
		names := make([]string, 0, len(byName))
		for n := range byName {
			names = append(names, n)
		}
		sort.Strings(names)
		parts := make([][]porcupine.Operation, 0, len(names))
		for _, n := range names {
			parts = append(parts, byName[n])
		}
		return parts
	},
	Init: func() []interface{} { return []interface{}{State{}} },
	Step: func(state, input, output interface{}) []interface{} {
		next := step(state.(State), input.(Input), output.(Output))
		out := make([]interface{}, len(next))
		for i, s := range next {
			out[i] = s
		}
		return out
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(Input), output.(Output)
		arg := in.Name
		if in.Op == Update {
			arg = fmt.Sprintf("%s, cpus=%d", in.Name, in.CPUs)
		}
		ans := out.Result
		if out.Result == OK && (in.Op == Get || in.Op == List || in.Op == Update || in.Op == Create) {
			ans = fmt.Sprintf("%s cpus=%d", out.ID, out.CPUs)
		}
		return fmt.Sprintf("%s(%s) -> %s", in.Op, arg, ans)
	},
	DescribeState: func(state interface{}) string { return state.(State).String() },
}).ToModel()
