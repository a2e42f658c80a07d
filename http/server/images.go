package server

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// Images is what the image cache endpoints need: the nodes' agents asked
// over mTLS. A ControlPlane that does not implement it answers 404
// images_unsupported on those routes.
type Images interface {
	// ListImages lists node's cached images, or every ready node's when
	// node is empty; a node that does not answer is listed with an error.
	ListImages(ctx context.Context, node string) ([]messages.NodeImages, error)
	// DeleteImage removes an image (by sha256) from node's cache:
	// image_in_use (409) while a VM disk uses it, image_not_found (404).
	DeleteImage(ctx context.Context, node, sha256 string) error
}

func (s *Server) images() (Images, error) {
	im, ok := s.cp.(Images)
	if !ok {
		return nil, messages.Errorf(messages.KindNotFound, "images_unsupported", "this control plane cannot reach node image caches")
	}
	return im, nil
}

// listImages answers GET /v1/images[?node=N].
func (s *Server) listImages(c *gin.Context) {
	im, err := s.images()
	if err != nil {
		s.writeError(c, err)
		return
	}
	items, err := im.ListImages(c.Request.Context(), c.Query("node"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	if items == nil {
		items = []messages.NodeImages{}
	}
	c.JSON(http.StatusOK, messages.NodeImagesList{Items: items})
}

// deleteImage answers DELETE /v1/images/{digest}?node=N.
func (s *Server) deleteImage(c *gin.Context) {
	im, err := s.images()
	if err != nil {
		s.writeError(c, err)
		return
	}
	node := c.Query("node")
	if node == "" {
		s.writeError(c, messages.Invalid("node", "is required: an image is deleted from one node's cache"))
		return
	}
	sha := c.Param("digest")
	setAuditTarget(c, node+"/"+sha)
	if err := im.DeleteImage(c.Request.Context(), node, sha); err != nil {
		s.writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
