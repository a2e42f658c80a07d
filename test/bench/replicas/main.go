// Command replicas measures the write path of a three-replica control plane
// against its floor, and how long a new replica takes to catch up and be
// promoted (issue 15), and prints Markdown for BENCHMARKS.md.
//
// Creates: in each round, on a fresh three-member embedded etcd cluster
// (mutual TLS between peers, joined and promoted by persistence/etcd as
// replicas are), the floor sends a transaction shaped like a VM create
// (test/bench's raw etcd txn: 2 compares, 6 puts) straight to the members'
// in-process clients; then, on another fresh cluster, three replicas (a
// gateway and a REST server over each member, as otherix-api runs them)
// take POST /v1/vms over loopback HTTP. Clients are spread over the three
// members or replicas alike. The paths rotate between rounds.
//
// Learners: a three-member cluster is filled with N VM rows (the store's
// create: row, name guard, owner index), a fourth member joins as a
// learner and is timed until it serves the last row written; a fifth then
// joins and both are timed until promoted (the odd-voters rule holds the
// fourth back until then).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// idleJoin leaves the cluster without writes while learners join.
var idleJoin bool

func main() {
	clients := flag.Int("c", 32, "concurrent clients, spread over the three members or replicas")
	dur := flag.Duration("d", 5*time.Second, "duration of each measurement")
	rounds := flag.Int("rounds", 3, "rounds; each measures every path on fresh clusters, in a rotating order")
	vms := flag.Int("learner-vms", 10000, "VM rows the cluster holds when a learner joins (0 skips the learner measurement)")
	flag.BoolVar(&idleJoin, "idle-join", false, "no write during the joins (a joiner by snapshot then never starts: etcd 3.7.3)")
	flag.Parse()
	fmt.Printf("replicas bench: %s, %d clients, %s per measurement, %d rounds, load %s\n",
		time.Now().UTC().Format(time.RFC3339), *clients, *dur, *rounds, loadavg())
	if err := creates(*clients, *dur, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "replicas bench:", err)
		os.Exit(1)
	}
	if *vms > 0 {
		if err := learners(*vms); err != nil {
			fmt.Fprintln(os.Stderr, "replicas bench:", err)
			os.Exit(1)
		}
	}
}

type result struct {
	ops     int
	errors  int64
	elapsed time.Duration
	p50     time.Duration
	p99     time.Duration
}

func (r result) perSec() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// measure runs op from workers goroutines for d and records each latency.
func measure(name string, workers int, d time.Duration, op func(ctx context.Context, worker, i int) error) result {
	ctx := context.Background()
	var errs atomic.Int64
	lat := make([][]time.Duration, workers)
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				t0 := time.Now()
				if err := op(ctx, w, i); err != nil {
					if errs.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, name+":", err)
					}
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	r := result{elapsed: time.Since(start), errors: errs.Load()}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r.ops = len(all)
	if len(all) > 0 {
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	return r
}

// path is one way of writing creates, on a fresh three-member cluster.
type path struct {
	name string
	run  func(ctx context.Context, c *cluster, workers int, d time.Duration) (result, error)
}

var payload = string(bytes.Repeat([]byte("x"), 600))

func rawTxn(_ context.Context, c *cluster, workers int, d time.Duration) (result, error) {
	return measure("raw", workers, d, func(ctx context.Context, w, i int) error {
		cli := c.members[w%len(c.members)].Client()
		id := fmt.Sprintf("%02d-%09d", w, i)
		_, err := cli.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision("/bench/raw/vms/"+id), "=", 0),
			clientv3.Compare(clientv3.CreateRevision("/bench/raw/uniq/"+id), "=", 0),
		).Then(
			clientv3.OpPut("/bench/raw/vms/"+id, payload), clientv3.OpPut("/bench/raw/uniq/"+id, id),
			clientv3.OpPut("/bench/raw/index/"+id, ""), clientv3.OpPut("/bench/raw/tasks/"+id, payload),
			clientv3.OpPut("/bench/raw/tindex/"+id, ""), clientv3.OpPut("/bench/raw/jobs/"+id, payload),
		).Commit()
		return err
	}), nil
}

// apiCreates runs a replica (gateway and REST server) over each member and
// sends POST /v1/vms to them in turn.
func apiCreates(noDispatch bool) func(ctx context.Context, c *cluster, workers int, d time.Duration) (result, error) {
	return func(ctx context.Context, c *cluster, workers int, d time.Duration) (result, error) {
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		var urls []string
		var token string
		for i, m := range c.members {
			st := store.New(m.Client(), store.WithMaxTxnOps(m.MaxTxnOps()))
			if i == 0 {
				if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
					return result{}, err
				}
			}
			// Started one after another: the first writes the signing key
			// the others read.
			gw, err := gateway.Start(ctx, st, gateway.Config{Replica: fmt.Sprintf("replica-%d", i+1), NoDispatch: noDispatch,
				JobBackoffBase: time.Hour, JobBackoffMax: time.Hour}, log)
			if err != nil {
				return result{}, err
			}
			defer gw.Close()
			if err := gw.Ready(ctx); err != nil {
				return result{}, err
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return result{}, err
			}
			hs := &http.Server{Handler: server.New(server.Config{}, gw, log).Handler()}
			go hs.Serve(ln)
			defer hs.Close()
			urls = append(urls, "http://"+ln.Addr().String())
			if i == 0 {
				if _, _, err := gw.BootstrapAdmin(ctx, "bench@localhost", "bench-admin-password-1"); err != nil {
					return result{}, fmt.Errorf("bootstrap admin: %w", err)
				}
			}
		}
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
		// One login: the token is good on every replica.
		body, _ := json.Marshal(map[string]string{"email": "bench@localhost", "password": "bench-admin-password-1"})
		resp, err := hc.Post(urls[0]+"/v1/auth/login", "application/json", bytes.NewReader(body))
		if err != nil {
			return result{}, err
		}
		var pair struct {
			AccessToken string `json:"access_token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&pair)
		resp.Body.Close()
		if err != nil || pair.AccessToken == "" {
			return result{}, fmt.Errorf("login: %d %v", resp.StatusCode, err)
		}
		token = "Bearer " + pair.AccessToken
		spec := messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example/debian-12.qcow2"}}
		return measure("api", workers, d, func(ctx context.Context, w, i int) error {
			body, _ := json.Marshal(messages.CreateVMRequest{Name: fmt.Sprintf("a-%02d-%d", w, i), Spec: spec})
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, urls[w%len(urls)]+"/v1/vms", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", token)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}), nil
	}
}

func creates(workers int, d time.Duration, rounds int) error {
	paths := []path{
		{"raw etcd txn, 3 members (floor)", rawTxn},
		{"POST /v1/vms → 202, 3 replicas, not dispatching", apiCreates(true)},
		{"POST /v1/vms → 202, 3 replicas, dispatching every job", apiCreates(false)},
	}
	got := make([][]result, len(paths))
	for r := range rounds {
		for k := range paths {
			i := (k + r) % len(paths)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			c, err := newCluster(ctx, 3)
			if err != nil {
				cancel()
				return fmt.Errorf("round %d, %s: start cluster: %w", r+1, paths[i].name, err)
			}
			res, err := paths[i].run(ctx, c, workers, d)
			c.close()
			cancel()
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, paths[i].name, err)
			}
			got[i] = append(got[i], res)
			fmt.Printf("round %d: %s: %.0f/s p50 %s p99 %s (%d errors), load %s\n", r+1, paths[i].name, res.perSec(),
				rnd(res.p50), rnd(res.p99), res.errors, loadavg())
		}
	}
	fmt.Printf("\n| path (%d clients) | creates/s, median (min–max) | p50 | p99, median (min–max) | ÷ floor of the same round, median (min–max) |\n|---|---|---|---|---|\n", workers)
	for i, p := range paths {
		rate := spread(got[i], func(r result) float64 { return r.perSec() })
		p50 := spread(got[i], func(r result) float64 { return float64(r.p50) })
		p99 := spread(got[i], func(r result) float64 { return float64(r.p99) })
		var ratios []float64
		for r := range got[i] {
			ratios = append(ratios, got[i][r].perSec()/got[0][r].perSec())
		}
		ratio := spreadOf(ratios)
		fmt.Printf("| %s | %.0f (%.0f–%.0f) | %s | %s (%s–%s) | %.0f %% (%.0f–%.0f %%) |\n", p.name, rate.med, rate.min, rate.max,
			rnd(time.Duration(p50.med)), rnd(time.Duration(p99.med)), rnd(time.Duration(p99.min)), rnd(time.Duration(p99.max)),
			100*ratio.med, 100*ratio.min, 100*ratio.max)
	}
	return nil
}

// learners fills a three-member cluster with n VM rows, then times a
// fourth member's catch-up as a learner and the promotion of the fourth
// and a fifth.
func learners(n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c, err := newCluster(ctx, 3)
	if err != nil {
		return err
	}
	defer c.close()
	st := store.New(c.members[0].Client(), store.WithMaxTxnOps(c.members[0].MaxTxnOps()))
	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				now := time.Now().UTC()
				vm := &messages.VM{ID: messages.NewID(), Name: fmt.Sprintf("vm-%06d", i), Owner: "bench", Generation: 1,
					Spec: messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example/debian-12.qcow2"},
						CPUs: 2, MemoryMiB: 2048, DiskGiB: 20, UserData: payload, PowerState: messages.PowerRunning},
					Status: messages.VMStatus{Phase: messages.PhaseRunning, Node: "n1"}, CreatedAt: now, UpdatedAt: now}
				if err := st.Commit(ctx, store.CreateVM(store.NewTxn(), vm)); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	if _, err := c.members[0].Client().Put(ctx, "/bench/marker", "last"); err != nil {
		return err
	}
	status, err := c.members[0].Status(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("\nlearners: %d VM rows written in %s; db %.1f MiB, revision %d, load %s\n", n, time.Since(t0).Round(time.Millisecond),
		float64(status.DBSize)/(1<<20), status.Revision, loadavg())

	// A cluster in use writes now and then. A member that joins by a Raft
	// snapshot counts its applied index from the first entry it applies
	// after the snapshot (etcd 3.7.3 does not set it from the snapshot):
	// on a cluster with no write at all its first proposal, the one that
	// publishes it, is refused "too many requests" forever and it never
	// starts. -idle-join shows it.
	if !idleJoin {
		tick, stopTick := context.WithCancel(ctx)
		defer stopTick()
		go func() {
			for tick.Err() == nil {
				_, _ = c.members[0].Client().Put(tick, "/bench/tick", time.Now().String())
				select {
				case <-tick.Done():
				case <-time.After(time.Second):
				}
			}
		}()
	}
	// etcd refuses a membership change for 5 s after the last one (the
	// promotions above); AddLearner waits that out, which is not the
	// learner's cost: start after it.
	time.Sleep(6 * time.Second) // etcd's fixed interval, not synchronization
	asked := time.Now()
	m4, added, err := c.join(ctx, "m4")
	if err != nil {
		return fmt.Errorf("learner m4, the fourth member, %s after its add: %w", time.Since(added).Round(time.Millisecond), err)
	}
	c.members = append(c.members, m4)
	started := time.Now()
	for {
		// A serializable read is served from the learner's own copy.
		resp, err := m4.Client().Get(ctx, "/bench/marker", clientv3.WithSerializable())
		if err == nil && len(resp.Kvs) == 1 {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("learner m4 never served the last row: %w", ctx.Err())
		}
		time.Sleep(10 * time.Millisecond) // polling the learner's copy
	}
	caught := time.Now()
	fmt.Printf("learner m4: AddLearner %s, its member started (etcd ready) %s later, serving the last row %s after that: %s from the add; still a learner: %v\n",
		added.Sub(asked).Round(time.Millisecond), started.Sub(added).Round(time.Millisecond), caught.Sub(started).Round(time.Millisecond),
		caught.Sub(asked).Round(time.Millisecond), m4.IsLearner())

	time.Sleep(6 * time.Second) // as above
	asked = time.Now()
	m5, added, err := c.join(ctx, "m5")
	if err != nil {
		return fmt.Errorf("learner m5, the fifth member, %s after its add: %w", time.Since(added).Round(time.Millisecond), err)
	}
	c.members = append(c.members, m5)
	started = time.Now()
	if err := c.promoteAll(ctx); err != nil {
		return err
	}
	promoted := time.Now()
	fmt.Printf("learner m5: AddLearner %s, started %s later; m4 and m5 both voters %s after m5 started (%s from its add)\n",
		added.Sub(asked).Round(time.Millisecond), started.Sub(added).Round(time.Millisecond),
		promoted.Sub(started).Round(time.Millisecond), promoted.Sub(asked).Round(time.Millisecond))
	return nil
}

type agg struct{ med, min, max float64 }

func spread(rs []result, f func(result) float64) agg {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return spreadOf(xs)
}

func spreadOf(xs []float64) agg {
	if len(xs) == 0 {
		return agg{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return agg{med: s[len(s)/2], min: s[0], max: s[len(s)-1]}
}

func rnd(d time.Duration) string { return d.Round(100 * time.Microsecond).String() }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
