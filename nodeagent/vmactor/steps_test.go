package vmactor

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// trace builds steps that log what they do and undo.
type trace struct{ log []string }

func (tr *trace) step(name string, fail error, undoErr error) step {
	return step{
		name: name,
		do: func(context.Context) error {
			tr.log = append(tr.log, "do "+name)
			return fail
		},
		undo: func() error {
			tr.log = append(tr.log, "undo "+name)
			return undoErr
		},
	}
}

func TestStepsUnwindInReverse(t *testing.T) {
	tr := &trace{}
	boom := errors.New("boom")
	var recorded []string
	r := stepRunner{record: func(s string) error { recorded = append(recorded, s); return nil }}
	steps := []step{tr.step("a", nil, nil), {name: "b", do: func(context.Context) error { tr.log = append(tr.log, "do b"); return nil }},
		tr.step("c", boom, nil), tr.step("d", nil, nil)}
	err := r.run(context.Background(), steps)
	var se *stepError
	if !errors.As(err, &se) || se.Step != "c" || !errors.Is(err, boom) || !strings.Contains(err.Error(), "step c: boom") {
		t.Fatalf("run = %v, want step c's error", err)
	}
	// The failed step is undone too (it may have made half of its change);
	// b has nothing to undo; d never began.
	want := []string{"do a", "do b", "do c", "undo c", "undo a"}
	if !slices.Equal(tr.log, want) {
		t.Errorf("log %v, want %v", tr.log, want)
	}
	if !slices.Equal(recorded, []string{"a", "b", "c"}) {
		t.Errorf("recorded %v", recorded)
	}
}

func TestStepsJoinUndoErrors(t *testing.T) {
	tr := &trace{}
	boom, u1, u2 := errors.New("boom"), errors.New("u1"), errors.New("u2")
	err := stepRunner{}.run(context.Background(), []step{tr.step("a", nil, u1), tr.step("b", nil, nil), tr.step("c", boom, u2)})
	for _, want := range []error{boom, u1, u2} {
		if !errors.Is(err, want) {
			t.Errorf("run = %v, lacks %v", err, want)
		}
	}
	if !strings.Contains(err.Error(), "undo a: u1") || !strings.Contains(err.Error(), "undo c: u2") {
		t.Errorf("undo errors do not name their steps: %v", err)
	}
	// Every undo ran despite the failures.
	if want := []string{"do a", "do b", "do c", "undo c", "undo b", "undo a"}; !slices.Equal(tr.log, want) {
		t.Errorf("log %v, want %v", tr.log, want)
	}
}

func TestStepsRecordFailureFailsTheStep(t *testing.T) {
	tr := &trace{}
	full := errors.New("disk full")
	r := stepRunner{record: func(s string) error {
		if s == "b" {
			return full
		}
		return nil
	}}
	err := r.run(context.Background(), []step{tr.step("a", nil, nil), tr.step("b", nil, nil)})
	var se *stepError
	if !errors.As(err, &se) || se.Step != "b" || !errors.Is(err, full) {
		t.Fatalf("run = %v", err)
	}
	// b never ran, but undoing it is harmless by contract.
	if want := []string{"do a", "undo b", "undo a"}; !slices.Equal(tr.log, want) {
		t.Errorf("log %v, want %v", tr.log, want)
	}
}

func TestStepsInjectAndSuccess(t *testing.T) {
	tr := &trace{}
	injected := errors.New("injected")
	r := stepRunner{inject: func(s string) error {
		if s == "b" {
			return injected
		}
		return nil
	}}
	if err := r.run(context.Background(), []step{tr.step("a", nil, nil), tr.step("b", nil, nil)}); !errors.Is(err, injected) {
		t.Fatalf("run = %v", err)
	}
	if want := []string{"do a", "undo b", "undo a"}; !slices.Equal(tr.log, want) {
		t.Errorf("log %v, want %v", tr.log, want)
	}
	tr.log = nil
	if err := (stepRunner{}).run(context.Background(), []step{tr.step("a", nil, nil), tr.step("b", nil, nil)}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"do a", "do b"}; !slices.Equal(tr.log, want) {
		t.Errorf("log %v, want %v", tr.log, want)
	}
}

func TestThrough(t *testing.T) {
	steps := []step{{name: "a"}, {name: "b"}, {name: "c"}}
	names := func(s []step) (out []string) {
		for _, x := range s {
			out = append(out, x.name)
		}
		return out
	}
	if got := names(through(steps, "b")); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("through b = %v", got)
	}
	// A record without a step (an older agent's) rolls back everything.
	if got := names(through(steps, "")); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("through \"\" = %v", got)
	}
}
