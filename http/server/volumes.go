package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

func writeVolume(c *gin.Context, status int, v *messages.Volume) {
	c.Header("ETag", etag(v.Revision))
	c.JSON(status, v)
}

// createVolume answers 201 with the volume: today a volume is recorded and
// placed in one etcd transaction and no agent task follows (it stays
// pending; docs/storage.md).
func (s *Server) createVolume(c *gin.Context) {
	var req messages.CreateVolumeRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	setAuditTarget(c, req.Name)
	v, err := s.cp.CreateVolume(c.Request.Context(), ownerOf(c), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("Location", "/v1/volumes/"+v.ID)
	writeVolume(c, http.StatusCreated, v)
}

func (s *Server) listVolumes(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	lctx, rr := listContext(c)
	vols, next, err := s.cp.ListVolumes(lctx, scopeOwner(c), page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(vols, next).at(rr))
}

func (s *Server) getVolume(c *gin.Context) {
	v, err := s.cp.GetVolume(c.Request.Context(), scopeOwner(c), c.Param("id"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	writeVolume(c, http.StatusOK, v)
}

// resizeVolume grows a volume: 200 with the volume, 409
// volume_shrink_unsupported below its size.
func (s *Server) resizeVolume(c *gin.Context) {
	var req messages.ResizeVolumeRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	v, err := s.cp.ResizeVolume(c.Request.Context(), scopeOwner(c), c.Param("id"), req.SizeBytes)
	if err != nil {
		s.writeError(c, err)
		return
	}
	writeVolume(c, http.StatusOK, v)
}

func (s *Server) deleteVolume(c *gin.Context) {
	if err := s.cp.DeleteVolume(c.Request.Context(), scopeOwner(c), c.Param("id")); err != nil {
		s.writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
