// Command bench measures the control plane's write path on this machine, from
// the floor (raw embedded-etcd transactions) through the typed store to
// POST /v1/vms over loopback, and prints a Markdown table for BENCHMARKS.md.
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
	"runtime"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/actors/gateway"
	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/http/server"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
)

// cpuProfile, when set, is where the API measurement's CPU profile goes.
var cpuProfile string

func main() {
	workers := flag.Int("c", 32, "concurrent clients")
	dur := flag.Duration("d", 10*time.Second, "duration of each measurement")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the API measurement to this file")
	flag.Parse()
	if err := run(*workers, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// result is one measurement: throughput and latency percentiles.
type result struct {
	name     string
	ops      int
	elapsed  time.Duration
	p50, p99 time.Duration
	errors   int64
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
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
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
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r := result{name: name, ops: len(all), elapsed: elapsed, errors: errs.Load()}
	if len(all) > 0 {
		r.p50 = all[len(all)/2]
		r.p99 = all[len(all)*99/100]
	}
	return r
}

// freshStore starts an empty member for one measurement, so no measurement
// pays for the keys (and the garbage-collector work over etcd's in-memory
// index) that an earlier one left behind.
func freshStore(ctx context.Context) (*store.Store, func(), error) {
	dir, err := os.MkdirTemp("", "otherix-bench-")
	if err != nil {
		return nil, nil, err
	}
	member, err := etcd.Start(ctx, etcd.Config{DataDir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	st := store.New(member.Client(), store.WithMaxTxnOps(member.MaxTxnOps()))
	if _, err := st.SeedSettings(ctx, messages.DefaultSettings()); err != nil {
		member.Close()
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return st, func() { member.Close(); os.RemoveAll(dir) }, nil
}

func run(workers int, d time.Duration) error {
	ctx := context.Background()
	st, closeStore, err := freshStore(ctx)
	if err != nil {
		return err
	}
	cli := st.Client()

	// The floor: a transaction of the same shape as a VM create (a guarded
	// row, a uniqueness key, an index key, a task, its index key and a job),
	// sent straight to the etcd client.
	payload := string(bytes.Repeat([]byte("x"), 600))
	raw := measure("raw etcd txn (6 puts, 2 compares)", workers, d, func(ctx context.Context, w, i int) error {
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
	})
	closeStore()

	if st, closeStore, err = freshStore(ctx); err != nil {
		return err
	}
	spec := messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example/debian-12.qcow2"}}
	spec.Defaults()
	storeRes := measure("store create (VM + name guard + index + task + job)", workers, d, func(ctx context.Context, w, i int) error {
		now := time.Now().UTC()
		vm := &messages.VM{ID: messages.NewID(), Name: fmt.Sprintf("s-%02d-%d", w, i), Owner: "bench", Generation: 1, Spec: spec,
			Status: messages.VMStatus{Phase: messages.PhasePending}, CreatedAt: now, UpdatedAt: now}
		task := &messages.Task{ID: messages.NewID(), Kind: messages.TaskVMCreate, State: messages.TaskPending,
			Target: messages.Target{Kind: "vm", ID: vm.ID, Name: vm.Name}, Owner: "bench", CreatedAt: now, UpdatedAt: now}
		job := &messages.Job{ID: messages.NewID(), TaskID: task.ID, Kind: task.Kind, Target: task.Target, MaxAttempts: 5,
			NotBefore: now.Add(24 * time.Hour), CreatedAt: now}
		t := store.NewTxn()
		store.CreateVM(t, vm)
		store.AddTask(t, task, job)
		return st.Commit(ctx, t)
	})
	closeStore()

	if st, closeStore, err = freshStore(ctx); err != nil {
		return err
	}
	apiOnly, err := measureAPI(ctx, st, workers, d, spec, true)
	closeStore()
	if err != nil {
		return err
	}
	if st, closeStore, err = freshStore(ctx); err != nil {
		return err
	}
	defer closeStore()
	apiJobs, err := measureAPI(ctx, st, workers, d, spec, false)
	if err != nil {
		return err
	}

	fmt.Printf("Measured %s on %d CPUs, %s per row, %d concurrent clients (`go run ./test/bench -c %d -d %s`).\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), d, workers, workers, d)
	fmt.Println("| path | ops/s | p50 | p99 | errors |")
	fmt.Println("|---|---:|---:|---:|---:|")
	for _, r := range []result{raw, storeRes, apiOnly, apiJobs} {
		fmt.Printf("| %s | %.0f | %s | %s | %d |\n", r.name, r.perSec(), r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.errors)
	}
	fmt.Printf("\nAPI create throughput is %.0f%% of the raw etcd floor with this replica not dispatching, %.0f%% while it also "+
		"attempts every new job (target ≥ 50%%); API p99 %s and %s (target < 50ms).\n",
		100*apiOnly.perSec()/raw.perSec(), 100*apiJobs.perSec()/raw.perSec(),
		apiOnly.p99.Round(10*time.Microsecond), apiJobs.p99.Round(10*time.Microsecond))
	return nil
}

// measureAPI drives POST /v1/vms through the whole stack: HTTP, JSON, the VM
// actor and its transaction. With noDispatch the replica claims no jobs, which
// isolates the API path; without it, every new job is claimed and attempted
// at once (and, with no nodes, released with a backoff): two more
// transactions per create competing for the same disk.
func measureAPI(ctx context.Context, st *store.Store, workers int, d time.Duration, spec messages.VMSpec, noDispatch bool) (result, error) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	gw, err := gateway.Start(ctx, st, gateway.Config{NoDispatch: noDispatch, JobBackoffBase: time.Hour, JobBackoffMax: time.Hour}, log)
	if err != nil {
		return result{}, err
	}
	defer gw.Close()
	srv := server.New(server.Config{}, gw, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	defer hs.Close()
	base := "http://" + ln.Addr().String()
	url := base + "/v1/vms"
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	// Every route needs a bearer token: bootstrap an admin, log in once and
	// send the JWT on every create (its 15 minutes outlast any run).
	const adminEmail, adminPassword = "bench@localhost", "bench-admin-password-1"
	if _, _, err := gw.BootstrapAdmin(ctx, adminEmail, adminPassword); err != nil {
		return result{}, fmt.Errorf("bootstrap admin: %w", err)
	}
	cl, err := client.New(base, client.WithHTTPClient(hc))
	if err != nil {
		return result{}, err
	}
	pair, err := cl.Login(ctx, adminEmail, adminPassword)
	if err != nil {
		return result{}, fmt.Errorf("login: %w", err)
	}
	bearer := "Bearer " + pair.AccessToken
	name := fmt.Sprintf("POST /v1/vms → 202, %d clients, replica dispatching jobs", workers)
	if noDispatch {
		name = fmt.Sprintf("POST /v1/vms → 202, %d clients, replica not dispatching", workers)
	}
	if cpuProfile != "" && noDispatch {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return result{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return result{}, err
		}
		defer pprof.StopCPUProfile()
	}
	return measure(name, workers, d, func(ctx context.Context, w, i int) error {
		body, _ := json.Marshal(messages.CreateVMRequest{Name: fmt.Sprintf("a-%02d-%d", w, i), Spec: spec})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", bearer)
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
