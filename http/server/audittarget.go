package server

import "github.com/gin-gonic/gin"

// ctxAuditTarget is what a handler records as the audit entry's target
// when the route names none: a create names the resource it made.
const ctxAuditTarget = "otherix.audit_target"

// auditTarget names what a request acted on: what the handler recorded, or
// the route's :id (VMs, users, tasks, tokens), or its :name (nodes,
// networks, which routes address by name).
func auditTarget(c *gin.Context) string {
	if t := c.GetString(ctxAuditTarget); t != "" {
		return t
	}
	if id := c.Param("id"); id != "" {
		return id
	}
	return c.Param("name")
}

// setAuditTarget records the resource a create made (or meant to make: a
// refused create is audited with the name it asked for).
func setAuditTarget(c *gin.Context, target string) {
	if target != "" {
		c.Set(ctxAuditTarget, target)
	}
}
