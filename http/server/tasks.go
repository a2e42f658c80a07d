package server

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// MaxTaskWait bounds ?wait= on GET /v1/tasks/{id}: long enough to save polls,
// short enough to stay under proxies' idle timeouts.
const MaxTaskWait = 60 * time.Second

func (s *Server) listTasks(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	lctx, rr := listContext(c)
	tasks, next, err := s.cp.ListTasks(lctx, scopeOwner(c), page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(tasks, next).at(rr))
}

// getTask answers at once, or with ?wait=30s as a long poll: it returns the
// moment the task is terminal, or its current state when the wait runs out.
func (s *Server) getTask(c *gin.Context) {
	wait, err := waitOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	ctx, owner, id := c.Request.Context(), scopeOwner(c), c.Param("id")
	if wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, wait)
		task, err := s.cp.WaitTask(wctx, owner, id)
		timedOut := wctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			c.JSON(http.StatusOK, task)
			return
		}
		if !timedOut {
			s.writeError(c, err)
			return
		}
		// The wait ran out with the task still going: fall through and
		// answer its current state, as a plain GET would.
	}
	task, err := s.cp.GetTask(ctx, owner, id)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, task)
}

// waitOf reads ?wait= as a Go duration (30s, 1m) or plain seconds (30),
// capped at MaxTaskWait.
func waitOf(c *gin.Context) (time.Duration, error) {
	v, ok := c.GetQuery("wait")
	if !ok || v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if secs, serr := time.ParseDuration(v + "s"); serr == nil {
			d, err = secs, nil
		}
	}
	if err != nil || d < 0 {
		return 0, apiError(messages.KindInvalid, "invalid_wait", "wait must be a duration such as 30s, at most %s", MaxTaskWait).
			WithDetail("max", MaxTaskWait.String())
	}
	return min(d, MaxTaskWait), nil
}

func (s *Server) cancelTask(c *gin.Context) {
	task, err := s.cp.CancelTask(c.Request.Context(), scopeOwner(c), c.Param("id"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, task)
}
