package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// waitRound bounds one long poll. The server answers a long poll only when
// the task ends, so rounds are what let progress show while it runs; the end
// itself is still seen the moment it happens.
const waitRound = 10 * time.Second

// waitGlitches is how many transport failures in a row a wait rides out: a
// dropped connection should not abandon a ten-minute wait.
const waitGlitches = 3

// waitFlags are the flags every --wait command shares.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

// waitTask long-polls task id until it is terminal, within budget, printing
// its state changes to stderr. It returns the terminal task, or the last
// state seen with an error that says how to keep following it.
func (a *app) waitTask(ctx context.Context, id string, budget time.Duration) (*messages.Task, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var last *messages.Task
	glitches := 0
	defer a.endProgress()
	for {
		rctx, rcancel := context.WithTimeout(wctx, waitRound)
		t, err := c.WaitTask(rctx, id, waitRound)
		rcancel()
		if t != nil {
			a.reportProgress(last, t)
			last = t
		}
		switch {
		case err == nil:
			return t, nil
		case ctx.Err() != nil:
			return last, codedf(codeInterrupted, "interrupted while waiting for task %s, which goes on; follow it with: otherix task wait %s", id, id)
		case wctx.Err() != nil:
			return last, codedf(codeWaitTimeout, "task %s is still %s after %s; follow it with: otherix task wait %s", id, stateOf(last), budget, id)
		case errors.Is(err, context.DeadlineExceeded):
			glitches = 0 // the round ended with the task still going
		case retryable(err) && glitches < waitGlitches:
			glitches++
			if !sleep(wctx, time.Second) {
				continue // the next round reports why the wait ended
			}
		default:
			return last, a.explain(ctx, err)
		}
	}
}

// reportProgress shows a task's state when it differs from the last one
// shown: on a terminal as one progress bar redrawn in place, otherwise as a
// plain line per change, which logs and pipes keep readable. A failure is
// left to the error the command returns.
func (a *app) reportProgress(prev, t *messages.Task) {
	if prev != nil && prev.State == t.State && prev.Progress == t.Progress && prev.Message == t.Message {
		return
	}
	terminal := t.State == messages.TaskFailed || t.State == messages.TaskCancelled || t.State == messages.TaskSuccess
	if a.stderrTTY != nil && a.stderrTTY() {
		fmt.Fprint(a.stderr, "\r"+progressBar(t)+"\x1b[K")
		a.barDrawn = true
		if terminal {
			a.endProgress()
		}
		return
	}
	if t.State == messages.TaskFailed || t.State == messages.TaskCancelled {
		return
	}
	line := fmt.Sprintf("task %s %s %s: %s", t.ID, t.Kind, targetName(t.Target), t.State)
	if t.State == messages.TaskRunning && t.Progress > 0 {
		line += fmt.Sprintf(" %d%%", t.Progress)
	}
	if t.Message != "" {
		line += " (" + t.Message + ")"
	}
	fmt.Fprintln(a.stderr, line)
}

// endProgress ends a progress bar's line, so what is printed next starts on
// a line of its own.
func (a *app) endProgress() {
	if a.barDrawn {
		fmt.Fprintln(a.stderr)
		a.barDrawn = false
	}
}

// barWidth is the number of cells of a progress bar.
const barWidth = 30

// progressBar renders a task as "[=====>    ]  42% vm.create web-1: running
// (downloading image)". A successful task is shown full.
func progressBar(t *messages.Task) string {
	pct := min(max(t.Progress, 0), 100)
	if t.State == messages.TaskSuccess {
		pct = 100
	}
	filled := pct * barWidth / 100
	bar := strings.Repeat("=", filled)
	if filled < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-filled-1)
	}
	line := fmt.Sprintf("[%s] %3d%% %s %s: %s", bar, pct, t.Kind, targetName(t.Target), t.State)
	if t.Message != "" {
		line += " (" + t.Message + ")"
	}
	return line
}

// taskOutcome turns a terminal task into the command's result: nil on
// success, else an error carrying the task's own code.
func taskOutcome(t *messages.Task) error {
	what := strings.TrimSpace(fmt.Sprintf("task %s (%s %s)", t.ID, t.Kind, targetName(t.Target)))
	switch t.State {
	case messages.TaskSuccess:
		return nil
	case messages.TaskCancelled:
		return codedf(codeCancelled, "%s was cancelled", what)
	}
	if t.Error != nil {
		return codedf(orDefault(t.Error.Code, codeTaskFailed), "%s failed: %s", what, t.Error.Message)
	}
	msg := t.Message
	if msg == "" {
		msg = "no reason given"
	}
	return codedf(codeTaskFailed, "%s %s: %s", what, t.State, msg)
}

// waitAccepted follows the task of an accepted write when --wait asks for it.
func (a *app) waitAccepted(ctx context.Context, acc *client.Accepted, w waitFlags) error {
	if !w.wait || acc == nil || acc.Task == nil {
		return nil
	}
	t := acc.Task
	fmt.Fprintf(a.stderr, "waiting for task %s (%s %s)…\n", t.ID, t.Kind, targetName(t.Target))
	t, err := a.waitTask(ctx, t.ID, w.timeout)
	if err != nil {
		return err
	}
	return taskOutcome(t)
}

// sleep waits d or until ctx ends, reporting whether ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return true
	case <-t.C:
		return false
	}
}

func stateOf(t *messages.Task) string {
	if t == nil {
		return "unknown"
	}
	return t.State
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
