//go:build etcd

package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/otherix/otherix/internal/testutil"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/etcd"
	"github.com/otherix/otherix/persistence/store"
)

// startMember runs a real embedded etcd member in a temp dir with the given
// per-transaction op limit (0 keeps etcd's default of 128).
func startMember(t testing.TB, maxTxnOps uint) *etcd.Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := etcd.Start(ctx, etcd.Config{DataDir: t.TempDir(), MaxTxnOps: maxTxnOps})
	if err != nil {
		t.Fatalf("start member: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

// startStore returns a store over a fresh member with etcd's default op limit.
func startStore(t *testing.T, opts ...store.Option) *store.Store {
	t.Helper()
	m := startMember(t, 0)
	return store.New(m.Client(), append([]store.Option{store.WithMaxTxnOps(m.MaxTxnOps())}, opts...)...)
}

// newClock is a settable clock for WithClock.
func newClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

// countKeys counts the keys under prefix.
func countKeys(t *testing.T, s *store.Store, prefix string) int64 {
	t.Helper()
	resp, err := s.Client().Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("count %s: %v", prefix, err)
	}
	return resp.Count
}

func keyExists(t *testing.T, s *store.Store, key string) bool {
	t.Helper()
	resp, err := s.Client().Get(context.Background(), key, clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return resp.Count == 1
}

func newVM(owner, name string) *messages.VM {
	now := time.Now().UTC()
	spec := messages.VMSpec{Image: messages.ImageSource{URL: "https://images.example.com/debian-12.qcow2"}}
	spec.Defaults()
	return &messages.VM{ID: messages.NewID(), Name: name, Owner: owner, Generation: 1, Spec: spec,
		Status: messages.VMStatus{Phase: messages.PhasePending}, CreatedAt: now, UpdatedAt: now}
}

func newTask(owner, state string, created time.Time) (*messages.Task, *messages.Job) {
	task := &messages.Task{ID: messages.NewID(), Kind: messages.TaskVMCreate, State: state,
		Target: messages.Target{Kind: "vm", ID: messages.NewID()}, Owner: owner, CreatedAt: created, UpdatedAt: created}
	job := &messages.Job{ID: messages.NewID(), TaskID: task.ID, Kind: task.Kind, Target: task.Target,
		MaxAttempts: 3, NotBefore: created, CreatedAt: created}
	task.JobID = job.ID
	return task, job
}

// domainError asserts err is a *messages.Error with the given code.
func domainError(t *testing.T, err error, code string) *messages.Error {
	t.Helper()
	var e *messages.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want a *messages.Error with code %s", err, err, code)
	}
	if e.Code != code {
		t.Fatalf("error code = %q (%v), want %q", e.Code, err, code)
	}
	return e
}

func TestCreateVMNameRace(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	const n = 50
	start := make(chan struct{})
	errs := make([]error, n)
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		vm := newVM("alice", "web")
		ids[i] = vm.ID
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.Commit(ctx, store.CreateVM(store.NewTxn(), vm))
		}()
	}
	close(start)
	wg.Wait()

	winner := ""
	for i, err := range errs {
		if err == nil {
			if winner != "" {
				t.Fatalf("two creates of one name succeeded: %s and %s", winner, ids[i])
			}
			winner = ids[i]
			continue
		}
		e := domainError(t, err, "vm_name_conflict")
		if e.Kind != messages.KindConflict {
			t.Errorf("conflict kind = %v, want KindConflict", e.Kind)
		}
	}
	if winner == "" {
		t.Fatal("no create succeeded")
	}
	if got := countKeys(t, s, store.RowPrefix(store.VMs)); got != 1 {
		t.Errorf("vm rows = %d, want 1", got)
	}
	if got := countKeys(t, s, store.Root+"uniq/"); got != 1 {
		t.Errorf("uniq keys = %d, want 1", got)
	}
	if got := countKeys(t, s, store.IndexPrefix(store.VMs, store.VMOwnerIndex("alice"))); got != 1 {
		t.Errorf("index keys = %d, want 1", got)
	}
	if id, err := s.VMIDByName(ctx, "alice", "web"); err != nil || id != winner {
		t.Errorf("name resolves to %q, %v; want the winner %s", id, err, winner)
	}
	// Names are unique per owner: another owner may use the same one.
	if err := s.Commit(ctx, store.CreateVM(store.NewTxn(), newVM("bob", "web"))); err != nil {
		t.Errorf("same name for another owner: %v", err)
	}
}

func TestTxnAtomicity(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	existing := newVM("alice", "db")
	task0, job0 := newTask("alice", messages.TaskPending, time.Now())
	if err := s.Commit(ctx, store.AddTask(store.CreateVM(store.NewTxn(), existing), task0, job0)); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		build func(vm *messages.VM, task *messages.Task, job *messages.Job)
		code  string
	}{
		{"name guard fails", func(vm *messages.VM, _ *messages.Task, _ *messages.Job) { vm.Name = existing.Name }, "vm_name_conflict"},
		{"task id exists", func(_ *messages.VM, task *messages.Task, _ *messages.Job) { task.ID = task0.ID }, "id_conflict"},
		{"job id exists", func(_ *messages.VM, _ *messages.Task, job *messages.Job) { job.ID = job0.ID }, "id_conflict"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := countKeys(t, s, store.Root)
			vm := newVM("alice", "fresh")
			task, job := newTask("alice", messages.TaskPending, time.Now())
			tc.build(vm, task, job)
			txn := store.CreateVM(store.NewTxn(), vm)
			store.AddTask(txn, task, job)
			domainError(t, s.Commit(ctx, txn), tc.code)
			if after := countKeys(t, s, store.Root); after != before {
				t.Errorf("keys under %s: %d before, %d after a refused txn", store.Root, before, after)
			}
			if keyExists(t, s, store.RowKey(store.VMs, vm.ID)) {
				t.Error("vm row written by a refused txn")
			}
			if keyExists(t, s, store.UniqKey(store.VMs, "name", "alice/fresh")) {
				t.Error("name guard written by a refused txn")
			}
			if vm.Revision != 0 {
				t.Errorf("refused txn set the revision to %d", vm.Revision)
			}
		})
	}
	// The original rows are untouched.
	got, err := s.GetVM(ctx, existing.ID)
	if err != nil || got.Revision != existing.Revision {
		t.Fatalf("existing vm = %+v, %v; want revision %d", got, err, existing.Revision)
	}
}

func TestStaleUpdate(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	vm := newVM("alice", "web")
	if err := s.Commit(ctx, store.CreateVM(store.NewTxn(), vm)); err != nil {
		t.Fatal(err)
	}
	old, err := s.GetVM(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.Revision != vm.Revision || old.Revision == 0 {
		t.Fatalf("read revision %d, commit reported %d", old.Revision, vm.Revision)
	}
	fresh := *old
	fresh.Spec.CPUs = 2
	if err := s.Commit(ctx, store.NewTxn().Update(store.VMs, &fresh)); err != nil {
		t.Fatalf("first update: %v", err)
	}
	if fresh.Revision <= old.Revision {
		t.Fatalf("update did not move the revision: %d -> %d", old.Revision, fresh.Revision)
	}

	stale := *old
	stale.Spec.CPUs = 8
	err = s.Commit(ctx, store.NewTxn().Update(store.VMs, &stale))
	e := domainError(t, err, "revision_conflict")
	if e.Kind != messages.KindStale {
		t.Errorf("kind = %v, want KindStale", e.Kind)
	}
	if !errors.Is(err, messages.ErrStaleRevision) {
		t.Error("stale update does not match messages.ErrStaleRevision")
	}
	// A stale delete is refused the same way.
	domainError(t, s.Commit(ctx, store.DeleteVM(store.NewTxn(), old)), "revision_conflict")

	got, err := s.GetVM(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.CPUs != 2 || got.Revision != fresh.Revision {
		t.Errorf("row after stale writes: cpus %d rev %d, want cpus 2 rev %d", got.Spec.CPUs, got.Revision, fresh.Revision)
	}
}

// pages walks a paginated list to its end and returns the ids of each page.
func pages[T interface{ EntityID() string }](t *testing.T, limit int, fetch func(store.Page) ([]T, string, error)) [][]string {
	t.Helper()
	var out [][]string
	cursor := ""
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatal("pagination does not end")
		}
		items, next, err := fetch(store.Page{Limit: limit, Cursor: cursor})
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		var ids []string
		for _, it := range items {
			ids = append(ids, it.EntityID())
		}
		out = append(out, ids)
		if next == "" {
			return out
		}
		cursor = next
	}
}

func checkPages(t *testing.T, got [][]string, sizes []int, want []string) {
	t.Helper()
	var lens []int
	var all []string
	for _, p := range got {
		lens = append(lens, len(p))
		all = append(all, p...)
	}
	if !slices.Equal(lens, sizes) {
		t.Fatalf("page sizes = %v, want %v", lens, sizes)
	}
	if !slices.Equal(all, want) {
		t.Fatalf("ids across pages are not the created ids in order (got %d ids, want %d)", len(all), len(want))
	}
}

func TestPagination(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	var alice []string
	txn := store.NewTxn()
	flush := func() {
		if txn.Len() == 0 {
			return
		}
		if err := s.Commit(ctx, txn); err != nil {
			t.Fatal(err)
		}
		txn = store.NewTxn()
	}
	for i := range 250 {
		vm := newVM("alice", fmt.Sprintf("vm-%03d", i))
		alice = append(alice, vm.ID)
		if txn.Len()+3 > s.MaxTxnOps() {
			flush()
		}
		store.CreateVM(txn, vm)
	}
	flush()
	if !slices.IsSorted(alice) {
		t.Fatal("ids are not created in lexical order")
	}

	listAll := func(p store.Page) ([]*messages.VM, string, error) {
		return store.List[messages.VM](ctx, s, store.VMs, p)
	}
	listOwner := func(owner string) func(store.Page) ([]*messages.VM, string, error) {
		return func(p store.Page) ([]*messages.VM, string, error) {
			return store.ListIndexed[messages.VM](ctx, s, store.VMs, store.VMOwnerIndex(owner), p)
		}
	}
	checkPages(t, pages(t, 100, listAll), []int{100, 100, 50}, alice)
	// The last page ends exactly at a page boundary: no empty page follows.
	checkPages(t, pages(t, 125, listAll), []int{125, 125}, alice)
	// Oversized limits are capped.
	checkPages(t, pages(t, 1000, listAll), []int{store.MaxPageSize, 50}, alice)

	// Another owner's rows must not leak into alice's index listing.
	var bob []string
	for i := range 7 {
		vm := newVM("bob", fmt.Sprintf("b-%d", i))
		bob = append(bob, vm.ID)
		store.CreateVM(txn, vm)
	}
	flush()
	checkPages(t, pages(t, 100, listOwner("alice")), []int{100, 100, 50}, alice)
	checkPages(t, pages(t, 100, listOwner("bob")), []int{7}, bob)
	checkPages(t, pages(t, 100, listAll), []int{100, 100, 57}, append(slices.Clone(alice), bob...))
	owned, _, err := s.ListVMs(ctx, "bob", store.Page{})
	if err != nil || len(owned) != 7 || owned[0].Owner != "bob" || owned[0].Revision == 0 {
		t.Fatalf("ListVMs(bob) = %d rows, %v", len(owned), err)
	}

	for _, bad := range []string{"%%%", store.EncodeCursor("a/b"), store.EncodeCursor("x\x01"), "Zm9v!"} {
		if _, _, err := listAll(store.Page{Limit: 10, Cursor: bad}); !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("List with cursor %q: err = %v, want ErrBadCursor", bad, err)
		}
		if _, _, err := listOwner("alice")(store.Page{Limit: 10, Cursor: bad}); !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("ListIndexed with cursor %q: err = %v, want ErrBadCursor", bad, err)
		}
	}
}

// writeTasks commits tasks (and their jobs, when withJob) in transactions
// that never carry more ops than the store's limit.
func writeTasks(t *testing.T, s *store.Store, tasks []*messages.Task, jobs map[string]*messages.Job) {
	t.Helper()
	txn := store.NewTxn()
	for _, task := range tasks {
		if txn.Len()+3 > s.MaxTxnOps() {
			if err := s.Commit(t.Context(), txn); err != nil {
				t.Fatal(err)
			}
			txn = store.NewTxn()
		}
		store.AddTask(txn, task, jobs[task.ID])
	}
	if err := s.Commit(t.Context(), txn); err != nil {
		t.Fatal(err)
	}
}

// sweepFixture writes nOld terminal tasks that finished long before the
// clock (every tenth with a leftover job row), plus tasks that must survive:
// non-terminal ones and terminal ones inside the retention window.
func sweepFixture(t *testing.T, s *store.Store, clk *testutil.Clock, nOld, nKeep int) (old, keep map[string]bool) {
	t.Helper()
	now := clk.Now()
	long := now.Add(-30 * 24 * time.Hour)
	recent := now.Add(-time.Hour)
	terminal := []string{messages.TaskSuccess, messages.TaskFailed, messages.TaskCancelled}
	var tasks []*messages.Task
	jobs := map[string]*messages.Job{}
	old, keep = map[string]bool{}, map[string]bool{}
	total := nOld + nKeep
	for i := range total {
		// Ids are time-ordered: spread the survivors evenly among the old
		// rows so that every page the sweep reads mixes both.
		if (i+1)*nKeep/total != i*nKeep/total {
			var task *messages.Task
			switch len(keep) % 3 {
			case 0:
				task, _ = newTask("sweeper", messages.TaskPending, long)
			case 1:
				task, _ = newTask("sweeper", messages.TaskRunning, long)
			default:
				task, _ = newTask("sweeper", terminal[len(keep)%3], long)
				task.FinishedAt = &recent
			}
			task.JobID = ""
			tasks = append(tasks, task)
			keep[task.ID] = true
			continue
		}
		task, job := newTask("sweeper", terminal[len(old)%3], long)
		task.FinishedAt = &long
		if len(old)%10 == 0 {
			jobs[task.ID] = job
		} else {
			task.JobID = ""
		}
		tasks = append(tasks, task)
		old[task.ID] = true
	}
	writeTasks(t, s, tasks, jobs)
	return old, keep
}

func checkSwept(t *testing.T, s *store.Store, keep map[string]bool) {
	t.Helper()
	resp, err := s.Client().Get(t.Context(), store.RowPrefix(store.Tasks), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != len(keep) {
		t.Errorf("task rows left = %d, want %d", len(resp.Kvs), len(keep))
	}
	unswept := 0
	for _, kv := range resp.Kvs {
		id := string(kv.Key)[len(store.RowPrefix(store.Tasks)):]
		if !keep[id] {
			if unswept++; unswept <= 5 {
				t.Errorf("task %s should have been swept", id)
			}
		}
	}
	if got := countKeys(t, s, store.IndexPrefix(store.Tasks, store.TaskOwnerIndex("sweeper"))); got != int64(len(keep)) {
		t.Errorf("task index keys left = %d, want %d", got, len(keep))
	}
	if got := countKeys(t, s, store.RowPrefix(store.Jobs)); got != 0 {
		t.Errorf("job rows left = %d, want 0", got)
	}
	for id := range keep {
		if _, err := s.GetTask(t.Context(), id); err != nil {
			t.Errorf("kept task %s: %v", id, err)
		}
	}
}

func TestSweepFinishedTasks10k(t *testing.T) {
	clk := newClock()
	s := startStore(t, store.WithClock(clk.Now))
	ctx := t.Context()
	if s.MaxTxnOps() != 128 {
		t.Fatalf("member op limit = %d, want etcd's default 128", s.MaxTxnOps())
	}
	// The member itself refuses a transaction over its limit, also through the
	// in-process client; so every transaction that succeeds below — the
	// fixture's and the sweep's — stayed within 128 ops.
	var over []clientv3.Op
	for i := range s.MaxTxnOps() + 1 {
		over = append(over, clientv3.OpPut(fmt.Sprintf("/probe/%d", i), ""))
	}
	if _, err := s.Client().Txn(ctx).Then(over...).Commit(); err == nil {
		t.Fatal("etcd accepted a transaction over its op limit; the sweep's success would prove nothing")
	}

	old, keep := sweepFixture(t, s, clk, 10_000, 600)
	if got := countKeys(t, s, store.RowPrefix(store.Tasks)); got != 10_600 {
		t.Fatalf("fixture wrote %d tasks", got)
	}
	n, err := s.SweepFinishedTasks(ctx, 7*24*time.Hour)
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if n != len(old) {
		t.Errorf("sweep reports %d removed, want %d", n, len(old))
	}
	checkSwept(t, s, keep)

	// A second sweep finds nothing more.
	if n, err := s.SweepFinishedTasks(ctx, 7*24*time.Hour); err != nil || n != 0 {
		t.Errorf("second sweep = %d, %v; want 0", n, err)
	}
}

// TestSweepTightOpLimit runs the sweep against a member with a tiny op limit,
// where rows of two and four ops must be packed without ever splitting a row's
// ops or going over; etcd refuses any transaction that would.
func TestSweepTightOpLimit(t *testing.T) {
	const limit = 9
	m := startMember(t, limit)
	clk := newClock()
	s := store.New(m.Client(), store.WithMaxTxnOps(limit), store.WithClock(clk.Now))
	_, keep := sweepFixture(t, s, clk, 400, 30)
	n, err := s.SweepFinishedTasks(t.Context(), 7*24*time.Hour)
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if n != 400 {
		t.Errorf("removed %d, want 400", n)
	}
	checkSwept(t, s, keep)
}

func TestSeedSettingsOnce(t *testing.T) {
	ctx := t.Context()
	s := startStore(t)
	if _, err := s.Settings(ctx); !errors.Is(err, store.ErrNotSeeded) {
		t.Fatalf("settings before seeding: %v, want ErrNotSeeded", err)
	}
	bad := messages.DefaultSettings()
	bad.UnderlayMTU = 100
	if _, err := s.SeedSettings(ctx, bad); messages.KindOf(err) != messages.KindInvalid {
		t.Fatalf("seeding invalid settings: %v, want KindInvalid", err)
	}
	if _, err := s.Settings(ctx); !errors.Is(err, store.ErrNotSeeded) {
		t.Fatalf("invalid settings were written: %v", err)
	}

	first := messages.DefaultSettings()
	seeded, err := s.SeedSettings(ctx, first)
	if err != nil || !seeded {
		t.Fatalf("first seed = %v, %v; want true", seeded, err)
	}
	got1, err := s.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second := messages.DefaultSettings()
	second.UnderlayMTU = 9000
	second.DefaultPool = "other"
	seeded, err = s.SeedSettings(ctx, second)
	if err != nil || seeded {
		t.Fatalf("second seed = %v, %v; want false", seeded, err)
	}
	got2, err := s.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got2 != got1 {
		t.Errorf("settings changed by a second seed: %+v -> %+v", got1, got2)
	}
	got2.Revision = 0
	if got2 != first {
		t.Errorf("settings = %+v, want the first seed %+v", got2, first)
	}
}

func TestIdempotencyRecords(t *testing.T) {
	ctx := t.Context()
	clk := newClock()
	s := startStore(t, store.WithClock(clk.Now))
	const scope = "alice POST /v1/vms"
	const ttl = 24 * time.Hour

	hold, prior, err := s.ReserveIdempotency(ctx, scope, "k1", "h1", ttl)
	if err != nil || hold == nil || prior != nil {
		t.Fatalf("first reserve = %v, %v, %v; want reserved", hold, prior, err)
	}
	again, prior, err := s.ReserveIdempotency(ctx, scope, "k1", "h1", ttl)
	if err != nil || again != nil || prior == nil || prior.Done || prior.RequestHash != "h1" || prior.AnswerLost() {
		t.Fatalf("second reserve = %+v, %+v, %v; want the in-progress record", again, prior, err)
	}
	// A different body under the same key sees the earlier fingerprint (the
	// HTTP layer answers 422); it does not take the key over.
	again, prior, err = s.ReserveIdempotency(ctx, scope, "k1", "h2", ttl)
	if err != nil || again != nil || prior == nil || prior.RequestHash != "h1" {
		t.Fatalf("reserve with another hash = %+v, %+v, %v", again, prior, err)
	}
	// The key is scoped: the same key of another caller is independent.
	bob, _, err := s.ReserveIdempotency(ctx, "bob POST /v1/vms", "k1", "h9", ttl)
	if err != nil || bob == nil {
		t.Fatalf("same key in another scope = %v, %v; want reserved", bob, err)
	}

	answer := store.IdempotencyRecord{RequestHash: "h1", Status: 202, Headers: map[string]string{"Location": "/v1/tasks/x"},
		Body: []byte(`{"task":{}}`), CreatedAt: clk.Now()}
	if ok, err := hold.Complete(ctx, answer); err != nil || !ok {
		t.Fatalf("complete = %v, %v", ok, err)
	}
	_, prior, err = s.ReserveIdempotency(ctx, scope, "k1", "h1", ttl)
	if err != nil || prior == nil || !prior.Done || prior.Status != 202 ||
		string(prior.Body) != `{"task":{}}` || prior.Headers["Location"] != "/v1/tasks/x" {
		t.Fatalf("reserve after complete = %+v, %v; want the replay record", prior, err)
	}

	// A lease-less reservation of an earlier version is presumed dead after
	// staleReservation (2 min), but only the same request takes it over; a
	// finished record never is before its retention ends.
	legacy, _ := json.Marshal(store.IdempotencyRecord{RequestHash: "h1", CreatedAt: clk.Now()})
	if _, err := s.Client().Put(ctx, store.IdempotencyKey(scope, "k2"), string(legacy)); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := s.ReserveIdempotency(ctx, scope, "k2", "h1", ttl); h != nil {
		t.Error("a fresh lease-less reservation was taken over")
	}
	clk.Add(3 * time.Minute)
	if h, _, _ := s.ReserveIdempotency(ctx, scope, "k2", "other", ttl); h != nil {
		t.Error("a stale reservation was taken over by a different request")
	}
	if h, _, _ := s.ReserveIdempotency(ctx, scope, "k2", "h1", ttl); h == nil {
		t.Error("a stale lease-less reservation of the same request was not taken over")
	}
	if h, prior, _ := s.ReserveIdempotency(ctx, scope, "k1", "h1", ttl); h != nil || !prior.Done {
		t.Error("a completed record was taken over")
	}

	// Abandon frees a key for a retry.
	if err := bob.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _, _ := s.ReserveIdempotency(ctx, "bob POST /v1/vms", "k1", "h9", ttl); h == nil {
		t.Error("abandoned key could not be reserved again")
	}

	// Sweep: k1 (completed at the start) and k2 and bob's k1 (reserved
	// three minutes in) are past a 24-hour retention 25 hours later; k3, written
	// then, is not.
	clk.Add(25 * time.Hour)
	if h, _, _ := s.ReserveIdempotency(ctx, scope, "k3", "h3", ttl); h == nil {
		t.Fatal("reserve k3")
	}
	n, err := s.SweepIdempotency(ctx, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 { // k1, k2 and bob's k1
		t.Errorf("swept %d records, want 3", n)
	}
	if h, _, _ := s.ReserveIdempotency(ctx, scope, "k1", "h1", ttl); h == nil {
		t.Error("swept key k1 is still remembered")
	}
	if h, prior, _ := s.ReserveIdempotency(ctx, scope, "k3", "h3", ttl); h != nil || prior == nil {
		t.Error("recent record k3 was swept")
	}
}
