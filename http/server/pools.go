package server

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// createPool answers 201 with the pool, synchronously: a pool is one etcd
// transaction, and its nodes learn of it from their next heartbeat answer.
func (s *Server) createPool(c *gin.Context) {
	var req messages.CreatePoolRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	setAuditTarget(c, req.Name)
	p, err := s.cp.CreatePool(c.Request.Context(), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("Location", "/v1/pools/"+p.Name)
	c.Header("ETag", etag(p.Revision))
	c.JSON(http.StatusCreated, p)
}

func (s *Server) listPools(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	lctx, rr := listContext(c)
	pools, next, err := s.cp.ListPools(lctx, page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(pools, next).at(rr))
}

func (s *Server) getPool(c *gin.Context) {
	p, err := s.cp.GetPool(c.Request.Context(), c.Param("name"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("ETag", etag(p.Revision))
	c.JSON(http.StatusOK, p)
}

// updatePool applies a merge patch to a pool's spec: only nodes and
// all_nodes may change. If-Match refuses a pool that moved on.
func (s *Server) updatePool(c *gin.Context) {
	patch, err := decodePoolPatch(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if patch.Revision, err = ifMatchRevision(c); err != nil {
		s.writeError(c, err)
		return
	}
	p, err := s.cp.UpdatePool(c.Request.Context(), c.Param("name"), patch)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("ETag", etag(p.Revision))
	c.JSON(http.StatusOK, p)
}

// poolImmutable are the fields of a pool a patch may name but not change:
// the driver and the path are where its data is; shared is what the
// filesystem under the path is.
var poolImmutable = []string{"id", "name", "status", "created_at", "updated_at", "revision"}
var poolSpecImmutable = []string{"driver", "path", "shared"}

// decodePoolPatch reads PATCH /v1/pools/{name} strictly: {"spec":
// {"nodes": [...], "all_nodes": bool}}, exact names; a pool's other
// fields are 400 field_immutable, anything else 400 unknown_field.
func decodePoolPatch(c *gin.Context) (messages.PoolPatch, error) {
	var patch messages.PoolPatch
	var body map[string]json.RawMessage
	if err := decodeJSON(c, &body); err != nil {
		return patch, err
	}
	if body == nil {
		return patch, apiError(messages.KindInvalid, "invalid_json", "the body must be a JSON object, not null")
	}
	for _, k := range sortedKeys(body) {
		switch {
		case k == "spec":
		case slices.Contains(poolImmutable, k):
			return patch, immutable(k)
		default:
			return patch, apiError(messages.KindInvalid, "unknown_field", "unknown field %q", k).WithDetail("field", k)
		}
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(body["spec"], &spec); err != nil || spec == nil {
		return patch, messages.Invalid("spec", "must be an object with nodes or all_nodes")
	}
	for _, k := range sortedKeys(spec) {
		v := spec[k]
		switch {
		case k == "nodes":
			var nodes []string
			if string(v) == "null" || json.Unmarshal(v, &nodes) != nil {
				return patch, messages.Invalid("spec.nodes", "must be a list of node names")
			}
			patch.Nodes = &nodes
		case k == "all_nodes":
			var all bool
			if string(v) == "null" || json.Unmarshal(v, &all) != nil {
				return patch, messages.Invalid("spec.all_nodes", "must be true or false")
			}
			patch.AllNodes = &all
		case slices.Contains(poolSpecImmutable, k):
			return patch, immutable("spec." + k)
		default:
			return patch, apiError(messages.KindInvalid, "unknown_field", "unknown field %q", "spec."+k).WithDetail("field", "spec."+k)
		}
	}
	return patch, nil
}

func immutable(field string) *messages.Error {
	return apiError(messages.KindInvalid, "field_immutable",
		"%s cannot change on an existing pool; only spec.nodes and spec.all_nodes can", field).WithDetail("field", field)
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// deletePool removes a pool; 409 pool_in_use while volumes are in it.
func (s *Server) deletePool(c *gin.Context) {
	if err := s.cp.DeletePool(c.Request.Context(), c.Param("name")); err != nil {
		s.writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
