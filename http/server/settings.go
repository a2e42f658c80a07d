package server

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// ClusterSettings is what the settings handlers need.
type ClusterSettings interface {
	// Settings answers the cluster settings document.
	Settings(ctx context.Context) (*messages.Settings, error)
	// UpdateSettings checks a change against the cluster (the nodes' host
	// prefixes, the networks, the tunnel addresses) and commits it;
	// ifMatch, when not 0, is the revision the caller read.
	UpdateSettings(ctx context.Context, p messages.Principal, patch messages.SettingsPatch, ifMatch int64) (*messages.Settings, error)
}

// getSettings answers the cluster settings (admin), with its revision as
// the ETag.
func (s *Server) getSettings(c *gin.Context) {
	st, err := s.cp.Settings(c.Request.Context())
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("ETag", etag(st.Revision))
	c.JSON(http.StatusOK, st)
}

// updateSettings applies a merge patch to the settings (admin),
// synchronously: 200 with the document as written. If-Match refuses a
// document that moved on since the caller read it (409 revision_conflict).
func (s *Server) updateSettings(c *gin.Context) {
	var patch messages.SettingsPatch
	if err := decodeJSON(c, &patch); err != nil {
		s.writeError(c, err)
		return
	}
	if patch.Empty() {
		s.writeError(c, messages.Invalid("body", "names no setting to change"))
		return
	}
	rev, err := ifMatchRevision(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	st, err := s.cp.UpdateSettings(c.Request.Context(), *principalOf(c), patch, rev)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("ETag", etag(st.Revision))
	c.JSON(http.StatusOK, st)
}
