package server

import (
	"errors"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/internal/profiling"
	"github.com/otherix/otherix/messages"
)

// debugProfile answers GET /v1/debug/pprof/:profile (admin): a runtime
// profile of this replica in pprof's format, a CPU profile or execution
// trace over ?seconds=N, or with goroutine?debug=2 the text dump of every
// goroutine. Each replica profiles itself: ask the one you mean.
func (s *Server) debugProfile(c *gin.Context) {
	name := c.Param("profile")
	switch err := profiling.Check(name, c.Request); {
	case errors.Is(err, profiling.ErrUnknown):
		s.writeError(c, apiError(messages.KindNotFound, "unknown_profile",
			"no profile %q: one of %s", name, strings.Join(profiling.Names(), ", ")))
		return
	case err != nil:
		s.writeError(c, messages.Invalid("seconds", "%s", err.Error()))
		return
	}
	profiling.Serve(c.Writer, c.Request, name)
}
