package agenttest

import (
	"net/http"
	"slices"
	"strings"

	"github.com/otherix/otherix/messages"
)

// SetImages sets the images the fake's cache lists (GET /v1/images). An
// image with VMs is refused by DELETE with 409 image_in_use, as the agent
// refuses an image a VM disk's chain uses.
func (a *Agent) SetImages(imgs []messages.NodeImage) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.images = slices.Clone(imgs)
}

// Images is what the fake's cache holds now.
func (a *Agent) Images() []messages.NodeImage {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.images)
}

// serveImages answers /v1/images and /v1/images/{sha256}; ok is false for
// another path.
func (a *Agent) serveImages(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/images":
		items := a.Images()
		if items == nil {
			items = []messages.NodeImage{}
		}
		writeJSON(w, http.StatusOK, messages.NodeImageList{Items: items})
		return true
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/v1/images/"):
		sha := strings.TrimPrefix(r.URL.Path, "/v1/images/")
		a.mu.Lock()
		defer a.mu.Unlock()
		i := slices.IndexFunc(a.images, func(m messages.NodeImage) bool { return m.SHA256 == sha })
		switch {
		case i < 0:
			writeError(w, http.StatusNotFound, "image_not_found", "no cached image has sha256 "+sha)
		case len(a.images[i].VMs) > 0:
			writeError(w, http.StatusConflict, "image_in_use", "image "+sha+" is the backing file of a vm disk")
		default:
			a.images = slices.Delete(a.images, i, i+1)
			w.WriteHeader(http.StatusNoContent)
		}
		return true
	}
	return false
}
