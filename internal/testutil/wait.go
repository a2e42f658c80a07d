// Package testutil holds the helpers tests share: a clock moved by hand,
// and waiting for a condition that another goroutine or process makes
// true. Tests poll with a deadline
// rather than sleep a guessed time, so they are as fast as the code allows
// and fail with a message naming what never happened.
package testutil

import (
	"testing"
	"time"
)

// Until calls cond every interval until it returns true or within has
// passed, and reports whether it held. cond runs at least once, and once
// more after the deadline, so a slow last poll is not lost. Use it when the
// caller writes its own failure message from state it gathered in cond.
func Until(within, interval time.Duration, cond func() bool) bool {
	ok, _ := poll(within, interval, func() (bool, string) { return cond(), "" })
	return ok
}

// Eventually fails t unless cond returns true within the given time,
// polling every interval; what names the awaited condition in the message.
func Eventually(t testing.TB, within, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(within, interval, cond) {
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
}

// EventuallyReport is Eventually for a cond that also describes what it
// last saw; the last description goes into the failure message.
func EventuallyReport(t testing.TB, within, interval time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	if ok, last := poll(within, interval, cond); !ok {
		t.Fatalf("timed out after %v waiting for %s; last: %s", within, what, last)
	}
}

func poll(within, interval time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(within)
	for {
		ok, last := cond()
		if ok {
			return true, last
		}
		if time.Now().After(deadline) {
			return false, last
		}
		time.Sleep(interval) // poll interval, not synchronization
	}
}
