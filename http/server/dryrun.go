package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// HeaderDryRun marks the answer of a request that ran as a dry run.
const HeaderDryRun = "Otherix-Dry-Run"

// ctxDryRun marks a request that runs as a dry run.
const ctxDryRun = "otherix.dry_run"

// dryRun reads ?dry_run= on a route that takes it. A dry run goes through
// authentication and authorization like the write (they run before this),
// then through the whole write path with a context under which the store
// checks every guard of the change and commits nothing
// (store.DryRun); it takes no Idempotency-Key record and, unless denied,
// leaves no audit entry, so the store's revision does not move.
func (s *Server) dryRun(c *gin.Context) {
	dry, err := boolQuery(c, "dry_run")
	if err != nil {
		s.writeError(c, err)
		c.Abort()
		return
	}
	if dry {
		c.Set(ctxDryRun, true)
		c.Request = c.Request.WithContext(store.DryRun(c.Request.Context()))
		c.Header(HeaderDryRun, "true")
	}
	c.Next()
}

// noDryRun refuses ?dry_run= on a write route that cannot honour it,
// rather than carry the write out.
func (s *Server) noDryRun(c *gin.Context) {
	if _, ok := c.GetQuery("dry_run"); ok {
		s.writeError(c, apiError(messages.KindInvalid, "dry_run_unsupported",
			"%s %s does not take dry_run", c.Request.Method, c.FullPath()).WithDetail("parameter", "dry_run"))
		c.Abort()
		return
	}
	c.Next()
}

// isDryRun reports whether the request runs as a dry run.
func isDryRun(c *gin.Context) bool { return c.GetBool(ctxDryRun) }

// writeDryRun answers a dry run that passed: what the write would do.
func writeDryRun(c *gin.Context, action string, vm *messages.VM, n *messages.Network) {
	c.JSON(http.StatusOK, messages.DryRunResult{DryRun: true, Action: action, VM: vm, Network: n})
}
