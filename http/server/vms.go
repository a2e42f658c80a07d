package server

import (
	"context"
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
	setAuditTarget(c, req.Name)
	vm, task, err := s.cp.CreateVM(c.Request.Context(), ownerOf(c), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if isDryRun(c) {
		writeDryRun(c, messages.DryRunCreate, vm, nil)
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
	lctx, rr := listContext(c)
	vms, next, err := s.cp.ListVMs(lctx, scopeOwner(c), page)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, newList(vms, next).at(rr))
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
	if isDryRun(c) {
		writeDryRun(c, messages.DryRunUpdate, vm, nil)
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
	s.vmTask(c, messages.RequestVMTask{Kind: messages.TaskVMDelete, Force: force})
}

func (s *Server) startVM(c *gin.Context) {
	s.vmTask(c, messages.RequestVMTask{Kind: messages.TaskVMStart})
}

// stopVM asks for a graceful stop; ?timeout= is how long the guest gets to
// power off after the ACPI button before the stop fails (it never forces).
func (s *Server) stopVM(c *gin.Context) {
	timeout, err := timeoutQuery(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	s.vmTask(c, messages.RequestVMTask{Kind: messages.TaskVMStop, TimeoutSeconds: timeout})
}

// poweroffVM is the hard stop: the VM's process ends at once.
func (s *Server) poweroffVM(c *gin.Context) {
	s.vmTask(c, messages.RequestVMTask{Kind: messages.TaskVMPoweroff})
}

// rebootVM reboots through the guest (ACPI; ?timeout= is the guest's grace
// period, as for stop), or with ?force=true resets the VM at once.
func (s *Server) rebootVM(c *gin.Context) {
	force, err := boolQuery(c, "force")
	if err != nil {
		s.writeError(c, err)
		return
	}
	// A graceful reboot is a graceful stop first: the same grace period.
	timeout, err := timeoutQuery(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	s.vmTask(c, messages.RequestVMTask{Kind: messages.TaskVMReboot, Force: force, TimeoutSeconds: timeout})
}

func (s *Server) vmTask(c *gin.Context, req messages.RequestVMTask) {
	vm, task, err := s.cp.RunVMTask(c.Request.Context(), scopeOwner(c), c.Param("id"), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if isDryRun(c) {
		action := map[string]string{messages.TaskVMDelete: messages.DryRunDelete, messages.TaskVMStart: messages.DryRunStart,
			messages.TaskVMStop: messages.DryRunStop}[req.Kind]
		writeDryRun(c, action, vm, nil)
		return
	}
	writeAccepted(c, vm, task)
}

func (s *Server) pauseVM(c *gin.Context) {
	s.syncVMOp(c, s.cp.PauseVM)
}

func (s *Server) resumeVM(c *gin.Context) {
	s.syncVMOp(c, s.cp.ResumeVM)
}

// syncVMOp runs a fast operation on the VM's node and answers 200 with the VM.
func (s *Server) syncVMOp(c *gin.Context, op func(context.Context, string, string) (*messages.VM, error)) {
	vm, err := op(c.Request.Context(), scopeOwner(c), c.Param("id"))
	if err != nil {
		s.writeError(c, err)
		return
	}
	writeVM(c, http.StatusOK, vm)
}

// vmLogs answers the end of the VM's serial console output as raw text.
func (s *Server) vmLogs(c *gin.Context) {
	tail, err := tailQuery(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	out, err := s.cp.VMLogs(c.Request.Context(), scopeOwner(c), c.Param("id"), tail)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Data(http.StatusOK, "text/plain; charset=utf-8", out)
}
