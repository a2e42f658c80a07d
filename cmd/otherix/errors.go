package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/otherix/otherix/http/client"
)

// Error codes the CLI itself raises; API errors keep the API's code.
const (
	codeUsage       = "usage"
	codeManifest    = "invalid_manifest"
	codeUnreachable = "connection_failed"
	codeTimeout     = "timeout"
	codeInterrupted = "interrupted"
	codeWaitTimeout = "wait_timeout"
	codeTaskFailed  = "task_failed"
	codeCancelled   = "task_cancelled"
	codePartial     = "partial_failure"
	codeUseHTTPS    = "https_required"
)

// cliError is an error with a stable code, printed as "Error: msg [code]".
type cliError struct {
	code string
	msg  string
	// usage marks a mistake in the command line, which earns a help hint.
	usage bool
}

func (e *cliError) Error() string { return e.msg }

// codedf builds a cliError.
func codedf(code, format string, args ...any) error {
	return &cliError{code: code, msg: fmt.Sprintf(format, args...)}
}

// usageError marks err as a command-line mistake.
func usageError(err error) error {
	return &cliError{code: codeUsage, msg: err.Error(), usage: true}
}

// printError writes err the one way the CLI reports failure.
func printError(w io.Writer, err error) {
	var me *manifestError
	var ce *cliError
	switch {
	case errors.As(err, &me) && len(me.problems) > 1:
		fmt.Fprintf(w, "Error: %d problems in the manifests; nothing was sent [%s]\n", len(me.problems), codeManifest)
		for _, p := range me.problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	case errors.As(err, &ce) && ce.usage:
		fmt.Fprintf(w, "Error: %s\nRun 'otherix --help' for usage.\n", errorLine(err))
	default:
		fmt.Fprintf(w, "Error: %s\n", errorLine(err))
	}
}

// errorLine renders err as "message [code]", with the request id of an API
// error so that an operator can find it in the server's logs.
func errorLine(err error) string {
	var api *client.APIError
	var ce *cliError
	var me *manifestError
	switch {
	case errors.As(err, &api):
		line := fmt.Sprintf("%s [%s]", api.Message, api.Code)
		if api.RequestID != "" {
			line += " (request id " + api.RequestID + ")"
		}
		return line
	case errors.As(err, &ce):
		return fmt.Sprintf("%s [%s]", ce.msg, ce.code)
	case errors.As(err, &me):
		return fmt.Sprintf("%s [%s]", me.Error(), codeManifest)
	}
	return err.Error()
}

// errorCode returns the code errorLine shows, or "" when err has none.
func errorCode(err error) string {
	var ce *cliError
	switch {
	case client.ErrorCode(err) != "":
		return client.ErrorCode(err)
	case errors.As(err, &ce):
		return ce.code
	}
	return ""
}

// explain turns a transport failure into a coded error that says what went
// wrong in the operator's terms; API errors and nil pass through. ctx is the
// command's context, to tell an interrupt from a request timeout.
func (a *app) explain(ctx context.Context, err error) error {
	var api *client.APIError
	var ce *cliError
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.As(err, &api) && api.Status == http.StatusUnauthorized:
		// The session ended or the token is wrong: say how to get a new one.
		e := *api
		// The API's message may already say to log in again: say it once,
		// with the command.
		msg := strings.TrimSuffix(e.Message, ".")
		msg = strings.TrimSuffix(strings.TrimSuffix(msg, "log in again"), "; ")
		e.Message = fmt.Sprintf("%s; log in again with: otherix login %s", msg, a.server)
		return &e
	case errors.As(err, &api) && api.Status == http.StatusBadRequest && strings.HasPrefix(a.server, "http://") &&
		strings.Contains(api.Message, "HTTP request to an HTTPS server"):
		// Go's TLS listener answers plain HTTP with this 400.
		return codedf(codeUseHTTPS, "%s answers HTTPS: use https://%s", a.server, strings.TrimPrefix(a.server, "http://"))
	case err == nil, errors.As(err, &api), errors.As(err, &ce):
		return err
	case a.explainTLS(err) != nil:
		return a.explainTLS(err)
	case ctx.Err() != nil:
		return codedf(codeInterrupted, "interrupted")
	case errors.Is(err, context.DeadlineExceeded):
		return codedf(codeTimeout, "no answer from %s within %s (raise --timeout)", a.server, a.timeout)
	case errors.As(err, &op):
		return codedf(codeUnreachable, "cannot reach %s: %v (is otherix-api running? see otherix config get-contexts, --server)", a.server, op)
	case errors.As(err, &ne):
		return codedf(codeUnreachable, "cannot reach %s: %v", a.server, err)
	}
	return err
}

// retryable reports whether a failed write may have been lost on the way or
// refused only for now, so that repeating it under the same Idempotency-Key
// is both safe and useful.
func retryable(err error) bool {
	var api *client.APIError
	if errors.As(err, &api) {
		switch api.Status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return api.Code == "idempotency_in_progress"
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		// Nothing reached the server: retrying only delays the real answer.
		return false
	}
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) ||
		(errors.As(err, &ne) && ne.Timeout())
}
