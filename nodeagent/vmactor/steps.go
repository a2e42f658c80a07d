package vmactor

import (
	"context"
	"errors"
	"fmt"
)

// step is one named change to the host and how to take it back.
type step struct {
	name string
	do   func(ctx context.Context) error
	// undo takes back what do made, or what a do that failed half-way
	// left; it must be safe to call then, and again after a crash (a
	// restart rolls back from the record). nil: nothing to take back.
	undo func() error
}

// stepError is the failure of one named step, after the steps before it
// were undone; undo errors, if any, are joined to it.
type stepError struct {
	Step string
	Err  error
}

func (e *stepError) Error() string { return "step " + e.Step + ": " + e.Err.Error() }
func (e *stepError) Unwrap() error { return e.Err }

// stepRunner runs a list of steps in order and, on the first failure,
// undoes in reverse every step it began, the failed one included. Before a
// step begins, record (if set) is told its name, so that a crash leaves
// the step it was in on disk; a record failure fails that step.
type stepRunner struct {
	record func(step string) error
	// inject, if set, is asked before each step whether to fail it:
	// tests fail each step in turn.
	inject func(step string) error
}

func (r stepRunner) run(ctx context.Context, steps []step) error {
	for i, s := range steps {
		err := r.begin(ctx, s)
		if err == nil {
			continue
		}
		errs := []error{&stepError{Step: s.name, Err: err}}
		if uerr := undo(steps[:i+1]); uerr != nil {
			errs = append(errs, uerr)
		}
		return errors.Join(errs...)
	}
	return nil
}

func (r stepRunner) begin(ctx context.Context, s step) error {
	if r.record != nil {
		if err := r.record(s.name); err != nil {
			return fmt.Errorf("record the step: %w", err)
		}
	}
	if r.inject != nil {
		if err := r.inject(s.name); err != nil {
			return err
		}
	}
	return s.do(ctx)
}

// undo takes back steps in reverse, going on past failures, and returns
// them joined, each naming its step.
func undo(steps []step) error {
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if steps[i].undo == nil {
			continue
		}
		if err := steps[i].undo(); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", steps[i].name, err))
		}
	}
	return errors.Join(errs...)
}

// through returns steps up to and including the one named; all of them if
// none is (a record from before steps were recorded).
func through(steps []step, name string) []step {
	for i, s := range steps {
		if s.name == name {
			return steps[:i+1]
		}
	}
	return steps
}
