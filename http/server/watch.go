package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/security"
	"github.com/otherix/otherix/watch"
)

// Defaults of the watch settings in Config.
const (
	// DefaultWatchMaxClients bounds the streams one replica serves, all
	// users together: each costs a goroutine, a buffer of up to
	// watch.DefaultBuffer rendered events and a connection
	// (BENCHMARKS.md, "Watch fan-out", has the cost per stream).
	DefaultWatchMaxClients = 4096
	DefaultWatchPerUser    = 16
	DefaultWatchAuthCheck  = time.Minute
)

// watchResources maps a stream type to the RBAC resource its list needs.
// Lifecycle events have none of their own: each is authorized as its
// object's list is (eventVisible), so every role may ask for them.
var watchResources = map[string]string{
	watch.VMs: security.ResourceVM, watch.Tasks: security.ResourceTask,
	watch.Nodes: security.ResourceNode, watch.Networks: security.ResourceNetwork,
	watch.Events: "",
}

// watchers counts the open streams of each user and of the replica, to
// bound them.
type watchers struct {
	mu    sync.Mutex
	open  map[string]int
	total int
}

// Why acquire refused a stream.
const (
	watchOK = iota
	watchReplicaFull
	watchUserFull
)

// acquire takes a stream slot for user, unless the replica already serves
// max streams or the user perUser.
func (w *watchers) acquire(user string, max, perUser int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.open == nil {
		w.open = make(map[string]int)
	}
	if w.total >= max {
		return watchReplicaFull
	}
	if w.open[user] >= perUser {
		return watchUserFull
	}
	w.open[user]++
	w.total++
	return watchOK
}

func (w *watchers) release(user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.total--
	if w.open[user]--; w.open[user] <= 0 {
		delete(w.open, user)
	}
}

// watchStream serves GET /v1/watch as Server-Sent Events: `id:` is the etcd
// revision, `event:` added, modified, deleted or bookmark, `data:` the
// resource as GET answers it. Each type is filtered as its list is: a role
// with own scope sees only its own VMs and tasks, deletions included.
func (s *Server) watchStream(c *gin.Context) {
	if s.cfg.Watch == nil {
		s.writeError(c, apiError(messages.KindUnavailable, "watch_unavailable", "this server does not serve watches"))
		return
	}
	p := principalOf(c)
	types, err := watchTypes(c.Query("types"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	since, err := watchSince(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	owners := make(map[string]string, len(types)) // type → owner scope, "" for any
	for _, t := range types {
		if t == watch.Events {
			continue
		}
		switch security.Allowed(security.Role(p.Role), watchResources[t], security.VerbList) {
		case security.ScopeAny:
			owners[t] = ""
		case security.ScopeOwn:
			owners[t] = p.UserID
		default:
			s.deny(c, apiError(messages.KindForbidden, "forbidden", "your role may not list %s", t).WithDetail("type", t))
			return
		}
	}
	switch s.watchers.acquire(p.UserID, s.cfg.WatchMaxClients, s.cfg.WatchPerUser) {
	case watchReplicaFull:
		// Not the caller's doing: another replica may have room, which is
		// what a client with several servers tries next.
		s.writeError(c, apiError(messages.KindTooManyRequests, "watch_capacity_reached",
			"this replica serves %d watch streams, the most it allows; retry later or on another replica", s.cfg.WatchMaxClients).
			WithDetail("limit", s.cfg.WatchMaxClients).WithDetail("retry_after", 1))
		return
	case watchUserFull:
		s.writeError(c, apiError(messages.KindTooManyRequests, "too_many_watches",
			"you have %d watch streams open, the most allowed; close one", s.cfg.WatchPerUser).
			WithDetail("limit", s.cfg.WatchPerUser).WithDetail("retry_after", 1))
		return
	}
	defer s.watchers.release(p.UserID)
	ctx := c.Request.Context()
	events := slices.Contains(types, watch.Events)
	sub, err := s.cfg.Watch.Subscribe(ctx, since, func(e watch.Event) bool {
		if e.Type == watch.Events {
			return events && eventVisible(p, e.Object, e.Owner)
		}
		owner, ok := owners[e.Type]
		// A scoped subscriber sees only rows it owns; a row whose owner
		// is unknown (a deletion etcd kept no previous value for) is
		// shown to no scoped subscriber.
		return ok && (owner == "" || owner == e.Owner)
	})
	var compacted *watch.CompactedError
	switch {
	case errors.As(err, &compacted):
		s.writeError(c, apiError(kindGone, "revision_compacted",
			"revision %d is older than the history kept; list again and watch from the list's meta.revision", since).
			WithDetail("compacted_revision", compacted.Compacted))
		return
	case errors.Is(err, watch.ErrFutureRevision):
		s.writeError(c, apiError(messages.KindInvalid, "future_revision",
			"revision %d is newer than any the control plane has reached", since))
		return
	case err != nil:
		s.writeError(c, err)
		return
	}
	defer sub.Close()
	s.serveEvents(c, p, sub)
}

// serveEvents writes the stream until the client leaves, the subscriber is
// dropped, or the credentials stop being valid.
func (s *Server) serveEvents(c *gin.Context, p *messages.Principal, sub *watch.Sub) {
	ctx := c.Request.Context()
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a buffering proxy would hold events back
	c.Status(http.StatusOK)
	c.Writer.WriteHeaderNow()
	c.Writer.Flush()
	bearer, _ := bearerToken(c.GetHeader("Authorization"))
	check := s.nextAuthCheck(bearer)
	for {
		wctx, cancel := context.WithDeadline(ctx, check)
		e, err := sub.Next(wctx)
		cancel()
		switch {
		case err == nil:
			if writeEvent(c, e) != nil {
				return
			}
			// One flush (a write to the connection) for all the events
			// already queued: a stream that lags catches up in fewer
			// writes, which is most of a stream's cost per event.
			if !sub.Pending() {
				c.Writer.Flush()
			}
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded):
			if !s.stillAuthenticated(ctx, bearer, p) {
				writeStreamError(c, "error", "token_expired", "the access token expired or was revoked; authenticate again and resume with Last-Event-ID")
				return
			}
			check = s.nextAuthCheck(bearer)
			continue
		case errors.Is(err, watch.ErrResync):
			writeStreamError(c, "resync", "resync", "the stream fell behind; list again and watch from the list's meta.revision")
		default:
			writeStreamError(c, "error", "watch_closed", "the server is closing the stream; resume with Last-Event-ID")
		}
		return
	}
}

// nextAuthCheck is when a stream next re-authenticates its bearer: at the
// periodic check, or at the JWT's expiry if that comes first.
func (s *Server) nextAuthCheck(bearer string) time.Time {
	next := s.now().Add(s.cfg.WatchAuthCheck)
	if exp, ok := jwtExpiry(bearer); ok && exp.Before(next) {
		next = exp.Add(security.Leeway + time.Second)
	}
	return next
}

// stillAuthenticated asks the identity service again: an expired or revoked
// token, a deleted user or a changed role ends the stream, whose filter was
// built for the old principal.
func (s *Server) stillAuthenticated(ctx context.Context, bearer string, was *messages.Principal) bool {
	p, err := s.cp.Authenticate(ctx, bearer)
	if err != nil {
		return messages.KindOf(err) != messages.KindUnauthenticated && ctx.Err() == nil
	}
	return p.UserID == was.UserID && p.Role == was.Role
}

// jwtExpiry reads the exp claim of a JWT without checking it: it only
// schedules the next check, which Authenticate does properly.
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(claims.Exp, 0), true
}

func writeEvent(c *gin.Context, e watch.Event) error {
	data := []byte(e.Data)
	if e.Kind == watch.Bookmark {
		data = []byte(`{"revision":` + strconv.FormatInt(e.Rev, 10) + `}`)
	}
	_, err := fmt.Fprintf(c.Writer, "id: %d\nevent: %s\ndata: %s\n\n", e.Rev, e.Kind, data)
	return err
}

// writeStreamError ends a stream with an event the client can act on: its
// data is the API's error envelope.
func writeStreamError(c *gin.Context, event, code, msg string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	_, _ = fmt.Fprintf(c.Writer, "event: %s\ndata: %s\n\n", event, b)
	c.Writer.Flush()
}

// watchTypes parses ?types=, a comma-separated set of known types. It is
// required: a client names what it renders, and a type added later never
// surprises an old client.
func watchTypes(v string) ([]string, error) {
	if v == "" {
		return nil, apiError(messages.KindInvalid, "invalid_watch_types", "types is required: a comma-separated list of %s",
			strings.Join(watch.Types, ", ")).WithDetail("allowed", watch.Types)
	}
	seen := map[string]bool{}
	var out []string
	for _, t := range strings.Split(v, ",") {
		t = strings.TrimSpace(t)
		if _, ok := watchResources[t]; !ok {
			return nil, apiError(messages.KindInvalid, "invalid_watch_types", "unknown watch type %q; known: %s",
				t, strings.Join(watch.Types, ", ")).WithDetail("type", t).WithDetail("allowed", watch.Types)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, nil
}

// watchSince reads ?since= or, when absent, the Last-Event-ID header a
// reconnecting EventSource sends; both name the last revision seen.
func watchSince(c *gin.Context) (int64, error) {
	v, ok := c.GetQuery("since")
	field := "since"
	if !ok {
		v, field = c.GetHeader("Last-Event-ID"), "Last-Event-ID"
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, apiError(messages.KindInvalid, "invalid_since", "%s must be a positive revision (a list's meta.revision or an event id)", field).
			WithDetail("field", field)
	}
	return n, nil
}
