package server

import (
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
	"github.com/otherix/otherix/security"
)

// eventResources maps an event's object kind to the RBAC resource whose
// list scope decides who sees it: an event is filtered as its object's list
// is, so a developer sees the events of their own VMs and tasks (and of the
// nodes every role may list), never another user's.
var eventResources = map[string]string{
	messages.EventObjectVM:   security.ResourceVM,
	messages.EventObjectTask: security.ResourceTask,
	messages.EventObjectNode: security.ResourceNode,
}

// eventVisible reports whether p may see an event about an object of kind
// owned by owner. An unknown kind is shown to nobody.
func eventVisible(p *messages.Principal, kind, owner string) bool {
	res, ok := eventResources[kind]
	if !ok || p == nil {
		return false
	}
	switch security.Allowed(security.Role(p.Role), res, security.VerbList) {
	case security.ScopeAny:
		return true
	case security.ScopeOwn:
		return owner != "" && owner == p.UserID
	}
	return false
}

// maxEventObject bounds ?object=: a name or an id, never longer.
const maxEventObject = 256

// listEvents serves GET /v1/events: lifecycle events, oldest first,
// filtered by ?type= (an object kind or an event type), ?since= (a
// duration back from now, or an RFC 3339 time) and ?object= (a name or
// id), and by what the caller may see.
func (s *Server) listEvents(c *gin.Context) {
	p := principalOf(c)
	f, err := s.eventFilter(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	f.Visible = func(e *messages.Event) bool { return eventVisible(p, e.Object.Kind, e.Owner) }
	lctx, rr := listContext(c)
	evs, next, err := s.cp.ListEvents(lctx, f, page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(evs, next).at(rr))
}

// getEvent serves GET /v1/events/{id}; an event the caller may not see is
// not found, as a missing one is.
func (s *Server) getEvent(c *gin.Context) {
	p := principalOf(c)
	e, err := s.cp.GetEvent(c.Request.Context(), c.Param("id"))
	if err == nil && !eventVisible(p, e.Object.Kind, e.Owner) {
		err = messages.NotFound("event", c.Param("id"))
	}
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, e)
}

func (s *Server) eventFilter(c *gin.Context) (store.EventFilter, error) {
	var f store.EventFilter
	if t := c.Query("type"); t != "" {
		if !messages.ValidEventTypeFilter(t) {
			return f, apiError(messages.KindInvalid, "invalid_event_type",
				"type must be an object kind (%s) or an event type such as vm.started", strings.Join(messages.EventKinds, ", ")).
				WithDetail("allowed", append(append([]string(nil), messages.EventKinds...), messages.EventTypes...))
		}
		f.Type = t
	}
	if v := c.Query("since"); v != "" {
		since, err := parseSince(v, s.now())
		if err != nil {
			return f, err
		}
		f.Since = since
	}
	if o := c.Query("object"); o != "" {
		if len(o) > maxEventObject {
			return f, apiError(messages.KindInvalid, "invalid_object", "object must be a name or an id of at most %d bytes", maxEventObject)
		}
		f.Object = o
	}
	return f, nil
}

// parseSince reads ?since= of the events list: a Go duration back from now
// (10m, 2h) or an RFC 3339 time.
func parseSince(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, apiError(messages.KindInvalid, "invalid_since",
		"since must be a duration such as 10m or an RFC 3339 time").WithDetail("field", "since")
}
