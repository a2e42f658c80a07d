//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otherix/otherix/internal/testutil"
)

// sseEvent is one event of a /v1/watch stream.
type sseEvent struct {
	id   int64
	kind string
	data []byte
}

// openWatch opens GET /v1/watch?types=networks on the replica at base,
// resuming after lastID (0: since) with Last-Event-ID as an EventSource
// does, and sends its events until the stream breaks.
func openWatch(t *testing.T, base string, since, lastID int64) (<-chan sseEvent, func()) {
	t.Helper()
	u := base + "/v1/watch?types=networks"
	if since > 0 {
		u += "&since=" + strconv.FormatInt(since, 10)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	host := strings.TrimPrefix(base, "https://")
	tok, _ := bearers.Load(host)
	req.Header.Set("Authorization", "Bearer "+tok.(string))
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(lastID, 10))
	}
	cl, _ := clients.Load(host)
	resp, err := cl.(*http.Client).Do(req)
	if err != nil {
		cancel()
		t.Fatalf("watch %s: %v", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("watch %s: %d %s", base, resp.StatusCode, b)
	}
	out := make(chan sseEvent, 4096)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var e sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e.kind != "" {
					out <- e
				}
				e = sseEvent{}
			case strings.HasPrefix(line, "id: "):
				e.id, _ = strconv.ParseInt(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				e.kind = line[7:]
			case strings.HasPrefix(line, "data: "):
				e.data = []byte(line[6:])
			}
		}
	}()
	return out, cancel
}

// netRow is what the test compares of a network: its revision.
type netRow struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Revision int64  `json:"revision"`
}

// changeLog checks a sequence of watch changes as it grows: strictly
// increasing revisions (so none twice), applied to a copy of the state.
type changeLog struct {
	mu    sync.Mutex
	last  int64
	state map[string]int64 // network id → revision
	seen  map[int64]bool   // revisions of changes
	err   error
}

func (l *changeLog) add(e sseEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.kind == "bookmark" || l.err != nil {
		return
	}
	var n netRow
	if err := json.Unmarshal(e.data, &n); err != nil {
		l.err = fmt.Errorf("event %d: %v", e.id, err)
		return
	}
	if e.id <= l.last {
		l.err = fmt.Errorf("change %d (%s %s) after %d: out of order or twice", e.id, e.kind, n.Name, l.last)
		return
	}
	l.last = e.id
	l.seen[e.id] = true
	switch e.kind {
	case "added", "modified":
		l.state[n.ID] = e.id
	case "deleted":
		delete(l.state, n.ID)
	default:
		l.err = fmt.Errorf("event %d: kind %q", e.id, e.kind)
	}
}

func (l *changeLog) snapshot() (map[string]int64, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cp := make(map[string]int64, len(l.state))
	for k, v := range l.state {
		cp[k] = v
	}
	return cp, l.last, l.err
}

// TestWatchResumesOnAnotherReplica: a client lists networks and watches
// replica 1; the CLI does the same with `network list -w -o json`, logged
// in through replica 1 with all three replicas known. Writes go on through
// replicas 2 and 3 all along. Replica 1 is killed with SIGKILL while
// changes stream; writes go on during the gap; the client resumes on
// replica 2 with Last-Event-ID (the last id it got), and the CLI fails
// over by itself. Each sees every change exactly once, in revision order,
// ending at the state a final list answers, and every acknowledged write.
func TestWatchResumesOnAnotherReplica(t *testing.T) {
	c := startThreeReplicas(t)
	a, b := c.rs[0], c.rs[1]

	fp := caFingerprint(t, filepath.Join(a.dataDir, "pki", "ca.pem"))
	if _, _, err := c.cli(adminPassword+"\n", "login", a.URL, "--user", adminEmail, "--password-stdin", "--ca-fingerprint", fp); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Items []netRow
		Meta  struct{ Revision int64 }
	}
	if code := call(t, "GET", a.URL+"/v1/networks", nil, &list); code != http.StatusOK {
		t.Fatalf("list: %d", code)
	}
	sdk := &changeLog{state: map[string]int64{}, seen: map[int64]bool{}, last: list.Meta.Revision}
	for _, n := range list.Items {
		sdk.state[n.ID] = n.Revision
	}
	events, stopA := openWatch(t, a.URL, list.Meta.Revision, 0)
	defer stopA()
	var lastID atomic.Int64
	lastID.Store(list.Meta.Revision)
	fromA := make(chan struct{})
	go func() {
		defer close(fromA)
		for e := range events {
			sdk.add(e)
			lastID.Store(e.id)
		}
	}()

	// The CLI follows through its failover transport.
	cli := exec.Command(filepath.Join(binDir(t), "otherix"), "network", "list", "-w", "-o", "json")
	cli.Env = c.env
	var cliErr bytes.Buffer
	cli.Stderr = &cliErr
	cliOut, err := cli.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cli.Process.Kill(); _ = cli.Wait() }()
	cliLog := &changeLog{state: map[string]int64{}, seen: map[int64]bool{}}
	cliListed := make(chan struct{})
	go func() {
		// The list comes first (an indented document), then a line per
		// change; the CLI's list may be at a later revision than ours.
		sc := bufio.NewScanner(cliOut)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var doc bytes.Buffer
		listed := false
		for sc.Scan() {
			line := sc.Bytes()
			if !listed {
				doc.Write(line)
				var l struct {
					Items []netRow
					Meta  struct{ Revision int64 }
				}
				if json.Unmarshal(doc.Bytes(), &l) == nil {
					cliLog.mu.Lock()
					cliLog.last = l.Meta.Revision
					for _, n := range l.Items {
						cliLog.state[n.ID] = n.Revision
					}
					cliLog.mu.Unlock()
					listed = true
					close(cliListed)
				}
				continue
			}
			var ch struct {
				Event    string          `json:"event"`
				Revision int64           `json:"revision"`
				Object   json.RawMessage `json:"object"`
			}
			if err := json.Unmarshal(line, &ch); err != nil {
				cliLog.mu.Lock()
				cliLog.err = fmt.Errorf("cli line %q: %v", line, err)
				cliLog.mu.Unlock()
				continue
			}
			cliLog.add(sseEvent{id: ch.Revision, kind: ch.Event, data: ch.Object})
		}
	}()
	select {
	case <-cliListed:
	case <-time.After(60 * time.Second):
		t.Fatalf("the CLI did not list: %s", cliErr.String())
	}

	// Writes through replicas 2 and 3 until told to stop: creates, and a
	// delete of an earlier network every third write. Acknowledged ones
	// are kept with their revisions; one that failed (an election during
	// the kill) may or may not have happened, and the final list decides.
	var (
		acked   sync.Map // revision → what
		nAcked  atomic.Int64
		stopW   = make(chan struct{})
		written = make(chan struct{})
	)
	go func() {
		defer close(written)
		for i := 0; i < 240; i++ { // 240 networks at most: their CIDRs stay apart
			select {
			case <-stopW:
				return
			default:
			}
			via := c.rs[1+i%2]
			name := fmt.Sprintf("wr-%d", i)
			var n netRow
			code, err := tryDo("POST", via.URL+"/v1/networks", map[string]string{"name": name, "cidr": fmt.Sprintf("10.61.%d.0/24", i)}, &n)
			if err == nil && code == http.StatusCreated {
				acked.Store(n.Revision, "create "+name)
				nAcked.Add(1)
			}
			if i%3 == 2 {
				old := fmt.Sprintf("wr-%d", i-2)
				_, _ = tryDo("DELETE", via.URL+"/v1/networks/"+old, nil, nil)
			}
		}
	}()
	stopWriting := func() {
		select {
		case <-stopW:
		default:
			close(stopW)
		}
		<-written
	}
	defer stopWriting()

	// Changes stream from replica 1, then it dies.
	testutil.Eventually(t, 60*time.Second, 20*time.Millisecond, "ten changes through replica 1", func() bool {
		_, last, _ := sdk.snapshot()
		return last >= list.Meta.Revision && len(sdk.seen) >= 10
	})
	a.kill9()
	select {
	case <-fromA:
	case <-time.After(30 * time.Second):
		t.Fatal("the stream from the killed replica did not end")
	}
	// Writes during the gap, acknowledged by the survivors.
	gapFrom := nAcked.Load()
	testutil.Eventually(t, 60*time.Second, 20*time.Millisecond, "ten writes acknowledged after the kill", func() bool {
		return nAcked.Load() >= gapFrom+10
	})
	resumeAt := lastID.Load()
	t.Logf("resuming on %s after revision %d; %d writes acknowledged since the kill", b.name, resumeAt, nAcked.Load()-gapFrom)
	events, stopB := openWatch(t, b.URL, 0, resumeAt)
	defer stopB()
	go func() {
		for e := range events {
			sdk.add(e)
		}
	}()
	// More writes while resumed, then the final state.
	testutil.Eventually(t, 60*time.Second, 20*time.Millisecond, "ten more writes", func() bool {
		select {
		case <-written:
			return true // all 240 written
		default:
		}
		return nAcked.Load() >= gapFrom+20
	})
	stopWriting()
	want := map[string]int64{}
	for cursor := ""; ; {
		var page struct {
			Items      []netRow
			NextCursor string `json:"next_cursor"`
		}
		if code, err := tryDo("GET", b.URL+"/v1/networks?limit=200&cursor="+cursor, nil, &page); err != nil || code != http.StatusOK {
			t.Fatalf("final list: %d %v", code, err)
		}
		for _, n := range page.Items {
			want[n.ID] = n.Revision
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	for name, l := range map[string]*changeLog{"client": sdk, "CLI": cliLog} {
		var got map[string]int64
		var err error
		ok := testutil.Until(60*time.Second, 50*time.Millisecond, func() bool {
			got, _, err = l.snapshot()
			return err != nil || equalRevs(got, want)
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !ok {
			t.Fatalf("%s: the changes seen build %d networks, the final list has %d:\ngot  %v\nwant %v\nCLI stderr: %s", name, len(got), len(want), got, want, cliErr.String())
		}
		l.mu.Lock()
		acked.Range(func(rev, what any) bool {
			// Every write came after both lists.
			if r := rev.(int64); !l.seen[r] {
				t.Errorf("%s missed the acknowledged %s at revision %d", name, what, r)
			}
			return true
		})
		l.mu.Unlock()
	}
	if !strings.Contains(cliErr.String(), "note: "+a.URL+" did not answer") {
		t.Logf("CLI stderr: %s", cliErr.String())
	}
}

func equalRevs(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// tryDo is tryCall that decodes the answer into out.
func tryDo(method, target string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok, ok := bearers.Load(req.URL.Host); ok {
		req.Header.Set("Authorization", "Bearer "+tok.(string))
	}
	cl, ok := clients.Load(req.URL.Host)
	if !ok {
		return 0, fmt.Errorf("no client for %s", req.URL.Host)
	}
	resp, err := cl.(*http.Client).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		_ = json.Unmarshal(raw, out)
	}
	return resp.StatusCode, nil
}
