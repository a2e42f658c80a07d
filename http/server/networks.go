package server

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// createNetwork answers 201 with the network, synchronously: creating one is
// a single etcd transaction and touches no node (agents learn of it from the
// desired state in their next heartbeat), so there is no task to wait for.
func (s *Server) createNetwork(c *gin.Context) {
	var req messages.CreateNetworkRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	setAuditTarget(c, req.Name)
	n, err := s.cp.CreateNetwork(c.Request.Context(), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if isDryRun(c) {
		writeDryRun(c, messages.DryRunCreate, nil, n)
		return
	}
	c.Header("Location", "/v1/networks/"+n.Name)
	c.Header("ETag", etag(n.Revision))
	c.JSON(http.StatusCreated, n)
}

func (s *Server) listNetworks(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	lctx, rr := listContext(c)
	nets, next, err := s.cp.ListNetworks(lctx, page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(nets, next).at(rr))
}

func (s *Server) getNetwork(c *gin.Context) {
	n, err := s.cp.GetNetwork(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("ETag", etag(n.Revision))
	c.JSON(http.StatusOK, n)
}

// updateNetwork applies a merge patch to a network: only egress may change,
// synchronously as for create (200 with the network; a patch that changes
// nothing answers it unchanged). If-Match refuses a network that moved on
// since the caller read it (409 revision_conflict).
func (s *Server) updateNetwork(c *gin.Context) {
	patch, err := decodeNetworkPatch(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if patch.Revision, err = ifMatchRevision(c); err != nil {
		s.writeError(c, err)
		return
	}
	n, err := s.cp.UpdateNetwork(c.Request.Context(), *principalOf(c), c.Param("name"), patch)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if isDryRun(c) {
		writeDryRun(c, messages.DryRunUpdate, nil, n)
		return
	}
	c.Header("ETag", etag(n.Revision))
	c.JSON(http.StatusOK, n)
}

// networkFields are the JSON names of a network's fields: in a patch, any
// of them but egress is field_immutable rather than unknown_field, so the
// client learns that the field exists but cannot change in place.
var networkFields = func() map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeFor[messages.Network]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			out[name] = true
		}
	}
	return out
}()

// decodeNetworkPatch reads a PATCH /v1/networks body strictly: a JSON
// object whose only member may be egress, a boolean. Field names are exact
// (encoding/json would match "Egress" too); a network's other fields are
// 400 field_immutable and anything else 400 unknown_field, each naming the
// field, the first in sorted order when there are several.
func decodeNetworkPatch(c *gin.Context) (store.NetworkPatch, error) {
	var patch store.NetworkPatch
	var body map[string]json.RawMessage
	if err := decodeJSON(c, &body); err != nil {
		return patch, err
	}
	if body == nil {
		return patch, apiError(messages.KindInvalid, "invalid_json", "the body must be a JSON object, not null")
	}
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch {
		case k == "egress":
			// null would unset the field in a merge patch; egress is
			// never unset, only true or false.
			var egress bool
			if v := body[k]; string(v) == "null" || json.Unmarshal(v, &egress) != nil {
				return patch, messages.Invalid("egress", "must be true or false")
			}
			patch.Egress = &egress
		case networkFields[k]:
			return patch, apiError(messages.KindInvalid, "field_immutable",
				"%s cannot change on an existing network; only egress can (delete and re-create the network for the rest)", k).
				WithDetail("field", k)
		default:
			return patch, apiError(messages.KindInvalid, "unknown_field", "unknown field %q", k).WithDetail("field", k)
		}
	}
	return patch, nil
}

// deleteNetwork removes a network; 409 network_in_use while VMs are attached.
func (s *Server) deleteNetwork(c *gin.Context) {
	if isDryRun(c) {
		// The network as it is, if the delete would pass its guards.
		n, err := s.cp.GetNetwork(c.Request.Context(), c.Param("name"))
		if err == nil {
			err = s.cp.DeleteNetwork(c.Request.Context(), c.Param("name"))
		}
		if err != nil {
			s.writeError(c, err)
			return
		}
		writeDryRun(c, messages.DryRunDelete, nil, n)
		return
	}
	if err := s.cp.DeleteNetwork(c.Request.Context(), c.Param("name")); err != nil {
		s.writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
