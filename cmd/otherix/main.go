// Command otherix is the Otherix command-line client: a kubectl-style front
// end to the control plane's REST API, built on the Go SDK in http/client.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Ctrl-C cancels the command's context, so a --wait stops polling and
	// says which task is still running instead of dying mid-line.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
