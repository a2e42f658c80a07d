package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/otherix/otherix/messages"
)

// accepted is the body of a 202: the task that will do the work and the VM it
// works on.
type accepted struct {
	Task *messages.Task `json:"task"`
	VM   *messages.VM   `json:"vm,omitempty"`
}

// writeAccepted answers 202 with the task and where to poll it.
func writeAccepted(c *gin.Context, vm *messages.VM, task *messages.Task) {
	c.Header("Location", "/v1/tasks/"+task.ID)
	c.JSON(http.StatusAccepted, accepted{Task: task, VM: vm})
}

func writeVM(c *gin.Context, status int, vm *messages.VM) {
	c.Header("ETag", etag(vm.Revision))
	c.JSON(status, vm)
}

func (s *Server) createVM(c *gin.Context) {
	var req messages.CreateVMRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	vm, task, err := s.cp.CreateVM(c.Request.Context(), ownerOf(c), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	writeAccepted(c, vm, task)
}

func (s *Server) listVMs(c *gin.Context) {
	page, err := pageOf(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	vms, next, err := s.cp.ListVMs(c.Request.Context(), scopeOwner(c), page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(vms, next))
}

func (s *Server) getVM(c *gin.Context) {
	vm, err := s.cp.GetVM(c.Request.Context(), scopeOwner(c), c.Param("id"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	writeVM(c, http.StatusOK, vm)
}

// updateVM changes a VM's spec. The expected revision comes from the body or
// from If-Match; when both are given they must agree.
func (s *Server) updateVM(c *gin.Context) {
	var req messages.UpdateVMRequest
	if err := decodeJSON(c, &req); err != nil {
		s.writeError(c, err)
		return
	}
	rev, err := ifMatchRevision(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if rev != 0 {
		if req.Revision != 0 && req.Revision != rev {
			s.writeError(c, messages.Invalid("revision", "the body says %d but If-Match says %d", req.Revision, rev))
			return
		}
		req.Revision = rev
	}
	vm, err := s.cp.UpdateVM(c.Request.Context(), scopeOwner(c), c.Param("id"), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	writeVM(c, http.StatusOK, vm)
}

func (s *Server) deleteVM(c *gin.Context) {
	force, err := boolQuery(c, "force")
	if err != nil {
		s.writeError(c, err)
		return
	}
	s.vmTask(c, messages.TaskVMDelete, force)
}

func (s *Server) startVM(c *gin.Context) { s.vmTask(c, messages.TaskVMStart, false) }

func (s *Server) stopVM(c *gin.Context) { s.vmTask(c, messages.TaskVMStop, false) }

func (s *Server) vmTask(c *gin.Context, kind string, force bool) {
	vm, task, err := s.cp.VMTask(c.Request.Context(), scopeOwner(c), c.Param("id"), kind, force)
	if err != nil {
		s.writeError(c, err)
		return
	}
	writeAccepted(c, vm, task)
}
