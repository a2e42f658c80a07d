//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// createResult is how one create with an Idempotency-Key ended for the
// client that sent it, retrying on other replicas.
type createResult struct {
	name string
	// acked: a 202 came back (maybe a replay); id and taskID are its.
	acked      bool
	id, taskID string
	// nameTaken: a retry found the name taken, by this very create whose
	// first answer was lost (names are never reused in these tests).
	nameTaken bool
	// answerLost: a retry was told the create was carried out but its
	// answer lost (409 idempotency_answer_lost: its replica died after the
	// write); written is what the answer named.
	answerLost bool
	written    []any
	// tries counts the requests sent; inProgress how many of them found the
	// key reserved by an attempt whose answer was lost.
	tries, inProgress int
	// err is an answer no retry can change (a test failure).
	err error
	// trail is the first requests' replica, start and answer, to tell
	// which replica left a key in progress.
	trail []string
	// attempts is every request sent, in order.
	attempts []attempt
}

// attempt is one request of a create.
type attempt struct {
	replica    string
	sent, done time.Time
	status     int
	code       string
	err        error
}

// unknown reports an attempt whose outcome the client cannot know.
func (a attempt) unknown() bool { return a.err != nil || a.status >= 500 }

// waitedOnVictim is how long a create whose request was in flight on
// victim when it was killed then waited for its answer on the survivors,
// when that request is the only one of unknown outcome before the answer
// (so only the victim's reservation can have held the key meanwhile). ok
// is false for a create without such a request.
func (r createResult) waitedOnVictim(victim string, killed time.Time) (d time.Duration, ok bool) {
	lost := -1
	for i, a := range r.attempts {
		switch {
		case a.unknown() && a.replica == victim && lost < 0 && a.sent.Before(killed) && !a.done.Before(killed):
			lost = i
		case a.unknown():
			return 0, false
		case a.code == "idempotency_in_progress":
		default:
			if lost < 0 {
				return 0, false
			}
			return a.done.Sub(r.attempts[lost].done), true
		}
	}
	if lost < 0 || len(r.attempts) == lost+1 {
		return 0, false
	}
	// Never answered: it waited at least this long.
	return r.attempts[len(r.attempts)-1].done.Sub(r.attempts[lost].done), true
}

// idempotentCreate creates VM name with its Idempotency-Key, each request to
// a random replica: an unknown outcome (no answer, a 5xx) is sent again, the
// same request under the same key, until an answer, within passes or stop
// is closed.
func (c *chaosCluster) idempotentCreate(name string, rng *rand.Rand, within time.Duration, stop <-chan struct{}) createResult {
	res := createResult{name: name}
	hdr := map[string]string{"Idempotency-Key": "create-" + name}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if res.tries > 0 {
			select {
			case <-stop:
				return res
			default:
			}
		}
		r := c.rs[rng.IntN(len(c.rs))]
		var a acceptedVM
		res.tries++
		sent := time.Now()
		var lost struct {
			Error struct {
				Details struct {
					Written []any `json:"written"`
				} `json:"details"`
			} `json:"error"`
		}
		st, code, err := c.doRaw(context.Background(), r, "POST", "/v1/vms", vmBody(name), hdr, &a, &lost)
		res.attempts = append(res.attempts, attempt{replica: r.name, sent: sent, done: time.Now(), status: st, code: code, err: err})
		if len(res.trail) < 4 {
			res.trail = append(res.trail, fmt.Sprintf("%s %s→%s: %d %s %v", r.name, sent.Format("15:04:05.000"),
				time.Now().Format("15:04:05.000"), st, code, err))
		}
		switch {
		case err == nil && st == http.StatusAccepted:
			res.acked, res.id, res.taskID = true, a.VM.ID, a.Task.ID
			return res
		case err == nil && st == http.StatusConflict && code == "vm_name_conflict":
			res.nameTaken = true
			return res
		case err == nil && st == http.StatusConflict && code == "idempotency_answer_lost":
			res.answerLost, res.written = true, lost.Error.Details.Written
			return res
		case err == nil && st == http.StatusConflict && code == "idempotency_in_progress":
			res.inProgress++
		case err != nil || st >= 500:
		default:
			res.err = fmt.Errorf("create %s via %s: %d %s", name, r.name, st, code)
			return res
		}
		time.Sleep(100 * time.Millisecond) // the client's retry pacing, not synchronization
	}
	return res
}

// createLoad runs workers that create VMs prefix-w<i>-<n> until stop is
// closed, each create retried as idempotentCreate does; it answers every
// result once the workers are done.
type createLoad struct {
	mu      sync.Mutex
	results []createResult
	acks    []time.Time
	wg      sync.WaitGroup
}

func (c *chaosCluster) startCreates(prefix string, workers int, seed uint64, stop <-chan struct{}) *createLoad {
	l := &createLoad{}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				res := c.idempotentCreate(fmt.Sprintf("%s-w%d-%d", prefix, w, n), rng, 90*time.Second, stop)
				l.mu.Lock()
				l.results = append(l.results, res)
				if res.acked {
					l.acks = append(l.acks, time.Now())
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// ackedSince counts the creates acknowledged after t.
func (l *createLoad) ackedSince(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.acks {
		if a.After(t) {
			n++
		}
	}
	return n
}

// firstAckAfter is the first acknowledgement after t (zero if none).
func (l *createLoad) firstAckAfter(t time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, a := range l.acks {
		if a.After(t) && (first.IsZero() || a.Before(first)) {
			first = a
		}
	}
	return first
}

// allVMs lists every VM by name through r, page by page.
func (c *chaosCluster) allVMs(r *replica) map[string][]vmAnswer {
	c.t.Helper()
	byName := map[string][]vmAnswer{}
	cursor := ""
	for {
		var page struct {
			Items      []vmAnswer `json:"items"`
			NextCursor string     `json:"next_cursor"`
		}
		path := "/v1/vms?limit=200"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		st, code, err := c.do(context.Background(), r, "GET", path, nil, nil, &page)
		if err != nil || st != http.StatusOK {
			c.t.Fatalf("list vms via %s: %d %s %v", r.name, st, code, err)
		}
		for _, vm := range page.Items {
			byName[vm.Name] = append(byName[vm.Name], vm)
		}
		if page.NextCursor == "" {
			return byName
		}
		cursor = page.NextCursor
	}
}

// checkCreates: every acknowledged create exists exactly once, with the id
// it was answered; a create whose retry found its name taken, or was told
// its answer was lost (naming the VM), exists once;
// one that never got an answer exists at most once; every acknowledged
// create's task ends.
func (c *chaosCluster) checkCreates(results []createResult, rng *rand.Rand) (acked, taken, unknown int) {
	c.t.Helper()
	vms := c.allVMs(c.rs[rng.IntN(len(c.rs))])
	for _, res := range results {
		if res.err != nil {
			c.t.Error(res.err)
			continue
		}
		got := vms[res.name]
		switch {
		case res.acked:
			acked++
			if len(got) != 1 || got[0].ID != res.id {
				c.t.Errorf("create %s was answered 202 with vm %s; the cluster holds %+v", res.name, res.id, got)
			}
		case res.nameTaken:
			taken++
			if len(got) != 1 {
				c.t.Errorf("create %s found its name taken; the cluster holds %+v", res.name, got)
			}
		case res.answerLost:
			taken++
			if len(got) != 1 || !slices.Contains(res.written, any("vms/"+got[0].ID)) {
				c.t.Errorf("create %s was told its answer was lost, naming %v; the cluster holds %+v", res.name, res.written, got)
			}
		default:
			unknown++
			if len(got) > 1 {
				c.t.Errorf("create %s (no answer) made %d vms", res.name, len(got))
			}
		}
	}
	for _, res := range results {
		if !res.acked {
			continue
		}
		if st := c.waitTaskEnd(res.taskID, 90*time.Second, rng); st != "success" && st != "failed" && st != "cancelled" {
			c.t.Errorf("task %s of create %s still %q", res.taskID, res.name, st)
		}
	}
	return acked, taken, unknown
}

// idempotencyLeaseTTL is the TTL of the lease a replica binds its
// Idempotency-Key reservations to (store.DefaultIdempotencyLeaseTTL).
const idempotencyLeaseTTL = 3 * time.Second

// TestKill9DuringIdempotentCreates: SIGKILL of the leader, then of a
// follower, while clients send creates with Idempotency-Keys, each to a
// random replica, sending the same request again to another after an
// unknown outcome. Every create answered 202 exists exactly once, with
// the id of its answer; every acknowledged create's task ends; creates are
// acknowledged again soon after the kill; a create whose request was lost
// with the killed replica is answered on a survivor within the reservation
// lease's TTL plus 7 s (the key is not left in progress for a minute).
func TestKill9DuringIdempotentCreates(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	c := startChaosCluster(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i, tc := range []struct {
		name   string
		victim func() *replica
	}{
		{"leader", func() *replica { return c.waitLeader() }},
		{"follower", func() *replica { return c.follower(rng) }},
		// The replica that owns the periodic loops (its election key dies
		// with its lease; another replica takes the loops over).
		{"loop owner", func() *replica { return c.waitLoopOwner() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			defer func() { c.t = c.root }()
			stop := make(chan struct{})
			load := c.startCreates(fmt.Sprintf("k%d", i), 3, seed+uint64(i), stop)
			defer func() {
				select {
				case <-stop:
				default:
					close(stop)
				}
				load.wg.Wait()
			}()
			start := time.Now()
			waitFor(t, "10 creates acknowledged", 60*time.Second, func() bool { return load.ackedSince(start) >= 10 }, c.rs...)
			victim := tc.victim()
			killing := time.Now()
			victim.kill9()
			killed := time.Now()
			waitFor(t, "10 creates acknowledged after the kill", 90*time.Second, func() bool { return load.ackedSince(killed) >= 10 })
			t.Logf("%s %s killed: first create acknowledged %s after", tc.name, victim.name,
				load.firstAckAfter(killed).Sub(killed).Round(time.Millisecond))
			c.restart(victim)
			restarted := time.Now()
			waitFor(t, "5 creates acknowledged after the restart", 60*time.Second, func() bool { return load.ackedSince(restarted) >= 5 })
			close(stop)
			load.wg.Wait()
			// A create whose request was lost with the victim is answered
			// on a survivor once the victim's reservation is gone with its
			// lease (or the answer is known lost), not after a minute.
			bound := idempotencyLeaseTTL + 7*time.Second
			var waited []time.Duration
			for _, r := range load.results {
				if d, ok := r.waitedOnVictim(victim.name, killing); ok {
					waited = append(waited, d)
					if d > bound {
						t.Errorf("create %s waited %v for its answer after its request to %s was lost (bound %v); requests: %q",
							r.name, d.Round(time.Millisecond), victim.name, bound, r.trail)
					}
				}
			}
			slices.Sort(waited)
			if len(waited) > 0 {
				t.Logf("%d creates had a request in flight on %s when it was killed; they were answered on a survivor after at most %v (median %v, bound %v)",
					len(waited), victim.name, waited[len(waited)-1].Round(time.Millisecond), waited[len(waited)/2].Round(time.Millisecond), bound)
			}
			acked, taken, unknown := c.checkCreates(load.results, rng)
			tries, inProgress := 0, 0
			for _, r := range load.results {
				tries += r.tries
				inProgress += r.inProgress
			}
			t.Logf("%d creates acknowledged, %d found their name taken or their answer lost on retry, %d without an answer; %d requests, %d answered idempotency_in_progress",
				acked, taken, unknown, tries, inProgress)
		})
	}
}

// retryUpdate sets the cpus of VM name, each request to a random replica,
// sending it again after an unknown outcome (setting the same cpus twice
// is harmless); it answers the last refusal, nil once a 200 came back.
func (c *chaosCluster) retryUpdate(name string, cpus int, rng *rand.Rand, within time.Duration) (tries int, err error) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		r := c.rs[rng.IntN(len(c.rs))]
		tries++
		var vm vmAnswer
		st, code, rerr := c.do(context.Background(), r, "PATCH", "/v1/vms/"+name, map[string]any{"spec": map[string]any{"cpus": cpus}}, nil, &vm)
		switch {
		case rerr == nil && st == http.StatusOK:
			if vm.Spec.CPUs != cpus {
				return tries, fmt.Errorf("update %s to %d cpus answered %d", name, cpus, vm.Spec.CPUs)
			}
			return tries, nil
		case rerr != nil || st >= 500:
			err = fmt.Errorf("update %s via %s: %d %s %v", name, r.name, st, code, rerr)
		default:
			return tries, fmt.Errorf("update %s via %s: %d %s", name, r.name, st, code)
		}
		time.Sleep(100 * time.Millisecond) // the client's retry pacing, not synchronization
	}
	return tries, err
}

// TestRollingRestartUnderWrites: each replica in turn is stopped (SIGTERM)
// and started again, waiting for three healthy voters before the next,
// while two clients create VMs and update them, each request to a random
// replica, retrying on another after an unknown outcome. No write fails
// beyond those retries: every create is answered 202 and every update 200,
// and every create exists once afterwards.
func TestRollingRestartUnderWrites(t *testing.T) {
	// It fails about once in 16 runs on a loaded host (load 20-40 with a
	// CPU hog): a create whose VM actor's commit outlasted the 10 s ask
	// answers 503 actor_timeout after its write committed, and its retry is
	// told idempotency_answer_lost (docs/ha.md, Not done yet). Until that
	// is fixed it runs under make chaos, not in make check.
	if os.Getenv("OTHERIX_CHAOS_DURATION") == "" {
		t.Skip("runs under make chaos: a known failure about once in 16 runs is open (docs/ha.md, Not done yet)")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	c := startChaosCluster(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var results []createResult
	var failures []error
	writes, tries := 0, 0
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				res := c.idempotentCreate(fmt.Sprintf("roll-w%d-%d", w, n), rng, 30*time.Second, nil)
				var errs []error
				if !res.acked {
					errs = append(errs, fmt.Errorf("create %s not acknowledged within its retries (name taken %v, answer lost %v, %d requests, %d in progress): %v; first requests: %q",
						res.name, res.nameTaken, res.answerLost, res.tries, res.inProgress, res.err, res.trail))
				}
				n := res.tries
				if res.acked {
					k, err := c.retryUpdate(res.name, 2+rng.IntN(3), rng, 30*time.Second)
					n += k
					if err != nil {
						errs = append(errs, err)
					}
				}
				mu.Lock()
				results = append(results, res)
				failures = append(failures, errs...)
				writes += 2
				tries += n
				mu.Unlock()
			}
		}()
	}
	done := func() int { mu.Lock(); defer mu.Unlock(); return writes }
	rolled := []string{}
	for _, r := range c.rs {
		before := done()
		t.Logf("%s: stopping %s", time.Now().Format("15:04:05.000"), r.name)
		r.stop()
		t.Logf("%s: %s stopped", time.Now().Format("15:04:05.000"), r.name)
		c.restart(r)
		t.Logf("%s: %s ready again", time.Now().Format("15:04:05.000"), r.name)
		waitFor(t, "three healthy voters after restarting "+r.name, 90*time.Second, func() bool {
			n := 0
			for _, m := range c.members(r) {
				if m.Role == "voter" && m.Healthy {
					n++
				}
			}
			return n == 3
		}, c.rs...)
		waitFor(t, "writes after restarting "+r.name, 60*time.Second, func() bool { return done() >= before+4 }, c.rs...)
		rolled = append(rolled, fmt.Sprintf("%s (%d writes)", r.name, done()-before))
	}
	close(stop)
	wg.Wait()
	t.Logf("restarted %v; %d writes in %d requests", rolled, writes, tries)
	for _, err := range failures {
		t.Error(err)
	}
	rng := rand.New(rand.NewPCG(seed, 9))
	acked, _, _ := c.checkCreates(results, rng)
	if acked == 0 {
		t.Fatal("no create acknowledged")
	}
}
