// Package server is otherix-agent's own HTTPS API (api/openapi/agent.yaml):
// the control plane calls it, over mutual TLS, to run VM tasks on this node.
// Only a client certificate of the cluster CA with the control plane's CN is
// accepted; a node certificate, which chains to the same CA, is refused so
// that one node can never drive another.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/otherix/otherix/http/apierror"
	"github.com/otherix/otherix/internal/requestid"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/nodeagent/console"
	"github.com/otherix/otherix/security"
)

// Backend is what the API serves: the agent's VM supervisor.
type Backend interface {
	// Submit starts a task, or returns the task already known by req.ID
	// (created false). A known id with another kind or VM is a conflict.
	Submit(req messages.AgentTaskRequest) (task *messages.AgentTask, created bool, err error)
	// Task returns a task; with wait > 0 it returns early only once the task
	// is terminal or its progress changed.
	Task(ctx context.Context, id string, wait time.Duration) (*messages.AgentTask, error)
	VMs() []messages.VMObserved
	VM(id string) (*messages.VMObserved, error)
	Pause(ctx context.Context, id string) (*messages.VMObserved, error)
	Resume(ctx context.Context, id string) (*messages.VMObserved, error)
	Log(id string, tail int64) ([]byte, error)
	// Console attaches a session to a running VM's serial console (mode
	// messages.ConsoleInteractive or messages.ConsoleReadOnly). Errors:
	// vm_not_found, vm_not_running, console_busy (another interactive
	// session, and not force). The API closes the session when done.
	Console(id, mode string, force bool) (*console.Session, error)
}

// ImageBackend is the node's image cache. A Backend that implements it
// serves GET /v1/images and DELETE /v1/images/{sha256}; without it those
// routes answer 404.
type ImageBackend interface {
	// ImageInventory lists the cached images with the VMs using them.
	ImageInventory(ctx context.Context) ([]messages.NodeImage, error)
	// DeleteImage removes a cached image. Errors: image_in_use (a VM disk's
	// backing chain uses it), image_not_found, image_sha256_invalid.
	DeleteImage(ctx context.Context, sha256 string) error
}

// Limits of the API.
const (
	// MaxBodyBytes bounds a request body: a task carries a spec with at most
	// 64 KiB of user-data, plus the envelope.
	MaxBodyBytes = 256 << 10
	// MaxWait bounds a long poll.
	MaxWait = 60 * time.Second
	// DefaultLogTail and MaxLogTail bound what one log read returns.
	DefaultLogTail = 64 << 10
	MaxLogTail     = 1 << 20
)

// Handler returns the API's routes over b.
func Handler(b Backend, log *slog.Logger) http.Handler { return newHandler(b, log, nil) }

// newHandler is Handler with metrics, if not nil, serving MetricsPath.
func newHandler(b Backend, log *slog.Logger, metrics http.Handler) http.Handler {
	a := &api{b: b, log: log, timing: currentConsoleTiming()}
	mux := http.NewServeMux()
	if metrics != nil {
		mux.Handle("GET "+MetricsPath, metrics)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("POST /v1/tasks", a.submit)
	mux.HandleFunc("GET /v1/tasks/{id}", a.task)
	mux.HandleFunc("GET /v1/vms", func(w http.ResponseWriter, _ *http.Request) {
		items := b.VMs()
		if items == nil {
			items = []messages.VMObserved{}
		}
		writeJSON(w, http.StatusOK, messages.AgentVMList{Items: items})
	})
	mux.HandleFunc("GET /v1/vms/{id}", func(w http.ResponseWriter, r *http.Request) {
		a.vmReply(w, r, func() (*messages.VMObserved, error) { return b.VM(r.PathValue("id")) })
	})
	mux.HandleFunc("POST /v1/vms/{id}/pause", func(w http.ResponseWriter, r *http.Request) {
		a.vmReply(w, r, func() (*messages.VMObserved, error) { return b.Pause(r.Context(), r.PathValue("id")) })
	})
	mux.HandleFunc("POST /v1/vms/{id}/resume", func(w http.ResponseWriter, r *http.Request) {
		a.vmReply(w, r, func() (*messages.VMObserved, error) { return b.Resume(r.Context(), r.PathValue("id")) })
	})
	mux.HandleFunc("GET /v1/vms/{id}/log", a.vmLog)
	if ib, ok := b.(ImageBackend); ok {
		mux.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) {
			items, err := ib.ImageInventory(r.Context())
			if err != nil {
				writeError(w, err)
				return
			}
			if items == nil {
				items = []messages.NodeImage{}
			}
			writeJSON(w, http.StatusOK, messages.NodeImageList{Items: items})
		})
		mux.HandleFunc("DELETE /v1/images/{sha256}", func(w http.ResponseWriter, r *http.Request) {
			if err := ib.DeleteImage(r.Context(), r.PathValue("sha256")); err != nil {
				writeError(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
	}
	mux.HandleFunc("GET /v1/vms/{id}/console", a.console)
	// Unknown paths and methods get the error envelope, not net/http's text.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The control plane sends the id of the request (or task) it acts
		// for: log lines here carry it, so one id finds both sides.
		if id := r.Header.Get(requestid.Header); requestid.Sane(id) {
			r = r.WithContext(requestid.With(r.Context(), id))
			w.Header().Set(requestid.Header, id)
		}
		level := slog.LevelDebug // polls of tasks and VMs, every few seconds
		if r.Method != http.MethodGet || strings.HasSuffix(r.URL.Path, "/console") {
			level = slog.LevelInfo
		}
		log.Log(r.Context(), level, "agent API request", "method", r.Method, "path", r.URL.Path,
			"request_id", requestid.From(r.Context()))
		if _, pattern := mux.Handler(r); pattern == "" {
			writeError(w, messages.Errorf(messages.KindNotFound, "route_not_found", "no route %s %s", r.Method, r.URL.Path))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// TLSConfig is the listener's TLS: the node certificate (from cert, so a
// renewed one is served at once) and client certificates that must chain to
// roots and name the control plane.
func TLSConfig(cert func() *tls.Certificate, roots *x509.CertPool, log *slog.Logger) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert(), nil
		},
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			var peer *x509.Certificate
			if len(cs.PeerCertificates) > 0 {
				peer = cs.PeerCertificates[0]
			}
			if err := security.VerifyControlPlaneCertPool(roots, peer, time.Now()); err != nil {
				cn := ""
				if peer != nil {
					cn = peer.Subject.CommonName
				}
				log.Warn("agent API refused a client", "cn", cn, "reason", err)
				return err
			}
			return nil
		},
	}
}

type api struct {
	b      Backend
	log    *slog.Logger
	timing consoleTiming
}

func (a *api) submit(w http.ResponseWriter, r *http.Request) {
	var req messages.AgentTaskRequest
	if err := decodeStrict(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := validateTask(req); err != nil {
		writeError(w, err)
		return
	}
	task, created, err := a.b.Submit(req)
	if err != nil {
		writeError(w, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusAccepted
		a.log.Info("task accepted", "task", task.ID, "kind", task.Kind, "vm", task.VMID,
			"request_id", requestid.From(r.Context()))
	}
	writeJSON(w, status, task)
}

func validateTask(req messages.AgentTaskRequest) error {
	if !messages.ValidID(req.ID) {
		return messages.Invalid("id", "must be a job id")
	}
	switch req.Kind {
	case messages.TaskVMCreate, messages.TaskVMStart, messages.TaskVMStop,
		messages.TaskVMPoweroff, messages.TaskVMReboot, messages.TaskVMDelete:
	default:
		return messages.Invalid("kind", "unknown task kind %q", req.Kind)
	}
	if !messages.ValidID(req.VM.ID) {
		return messages.Invalid("vm.id", "must be a vm id")
	}
	if req.TimeoutSeconds < 0 {
		return messages.Invalid("timeout_seconds", "must not be negative")
	}
	if req.Kind != messages.TaskVMCreate {
		return nil
	}
	// The control plane's check, verbatim: a spec it accepted is never
	// refused here for its shape.
	_, err := messages.PrepareVMCreate(req.VM.Name, req.VM.Spec)
	return err
}

func (a *api) task(w http.ResponseWriter, r *http.Request) {
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, messages.Invalid("wait", "must be a duration such as 30s"))
			return
		}
		wait = min(d, MaxWait)
	}
	task, err := a.b.Task(r.Context(), r.PathValue("id"), wait)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, task)
}

func (a *api) vmReply(w http.ResponseWriter, _ *http.Request, f func() (*messages.VMObserved, error)) {
	vm, err := f()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (a *api) vmLog(w http.ResponseWriter, r *http.Request) {
	tail := int64(DefaultLogTail)
	if v := r.URL.Query().Get("tail"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			writeError(w, messages.Invalid("tail", "must be a positive number of bytes"))
			return
		}
		tail = min(n, MaxLogTail)
	}
	b, err := a.b.Log(r.PathValue("id"), tail)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// decodeStrict checks the media type and reads one JSON value strictly
// (apierror.DecodeStrict) within MaxBodyBytes: the control plane and its
// agents are upgraded together, so an unknown field is a version mismatch to
// surface.
func decodeStrict(w http.ResponseWriter, r *http.Request, into any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return messages.Errorf(messages.KindInvalid, "unsupported_media_type", "the body must be application/json, not %q", ct)
	}
	return apierror.DecodeStrict(http.MaxBytesReader(w, r.Body, MaxBodyBytes), into)
}

func writeError(w http.ResponseWriter, err error) {
	var e *messages.Error
	if !errors.As(err, &e) {
		e = &messages.Error{Kind: messages.KindInternal, Code: "internal", Message: "internal error: " + err.Error()}
	}
	status := apierror.Status(e.Kind)
	writeJSON(w, status, apierror.NewBody(e.Code, e.Error(), e.Details))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// The envelope of plain strings always encodes.
		b, _ = json.Marshal(apierror.NewBody("internal", "encode answer: "+err.Error(), nil))
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
