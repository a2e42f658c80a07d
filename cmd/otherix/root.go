package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
)

// Defaults of the global flags.
const (
	defaultServer  = "http://127.0.0.1:7080"
	defaultTimeout = 30 * time.Second
	// defaultWaitTimeout bounds a --wait: long enough for an image download
	// and a boot, short enough that a stuck task does not hang a script.
	defaultWaitTimeout = 10 * time.Minute
	// envServer names the environment variable that overrides defaultServer.
	envServer = "OTHERIX_SERVER"
)

// Output formats accepted by -o.
const (
	outputTable = "table"
	outputWide  = "wide"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

var outputFormats = []string{outputTable, outputWide, outputJSON, outputYAML}

// app is the state of one invocation: the global flags and where output
// goes. Every command closes over it instead of package variables, so tests
// can build and run as many roots as they like side by side.
type app struct {
	stdout, stderr io.Writer
	// server is the API's base URL (--server, OTHERIX_SERVER).
	server string
	// output is the -o format, validated before any command runs.
	output string
	// timeout bounds one request; waits have their own budget.
	timeout time.Duration
	// newKey makes idempotency keys; a seam so tests can pin them.
	newKey func() string
	// now is the clock ages are measured against; a seam for tests.
	now func() time.Time

	api *client.Client // built lazily by client()
}

// run executes the CLI with args and returns the process exit code. Errors
// are printed once, here, as "Error: <message> [<code>]".
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		printError(stderr, err)
		return 1
	}
	return 0
}

// newRootCommand builds the whole command tree writing to stdout and stderr.
func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdout: stdout, stderr: stderr, newKey: newIdempotencyKey, now: time.Now}
	root := &cobra.Command{
		Use:   "otherix",
		Short: "Manage virtual machines on an Otherix cluster",
		Long: `otherix talks to the Otherix control plane (otherix-api) over its REST API.

Output: -o table (default) and -o wide print columns; -o json and -o yaml print
resources exactly as the API returns them. A list prints as {"items":[…]} with
every page already followed; an accepted write prints {"task":…,"vm":…}.`,
		Version:           version,
		SilenceUsage:      true,
		SilenceErrors:     true,
		Args:              noCommand,
		PersistentPreRunE: func(*cobra.Command, []string) error { return a.validate() },
		RunE:              func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })

	server := defaultServer
	if v := os.Getenv(envServer); v != "" {
		server = v
	}
	f := root.PersistentFlags()
	f.StringVar(&a.server, "server", server, "API base URL (env "+envServer+")")
	f.StringVarP(&a.output, "output", "o", outputTable, "output format: "+strings.Join(outputFormats, "|"))
	f.DurationVar(&a.timeout, "timeout", defaultTimeout, "time limit for one API request")

	root.AddCommand(a.vmCommand(), a.taskCommand(), a.createCommand(), a.deleteCommand(), versionCommand(stdout))
	return root
}

// validate checks the global flags before any command runs.
func (a *app) validate() error {
	if !slices.Contains(outputFormats, a.output) {
		return usageError(fmt.Errorf("unknown output format %q: want one of %s", a.output, strings.Join(outputFormats, ", ")))
	}
	if a.timeout <= 0 {
		return usageError(fmt.Errorf("--timeout must be positive, got %s", a.timeout))
	}
	return nil
}

// client returns the SDK client for --server, building it on first use.
func (a *app) client() (*client.Client, error) {
	if a.api != nil {
		return a.api, nil
	}
	c, err := client.New(a.server)
	if err != nil {
		return nil, usageError(fmt.Errorf("--server: %w", err))
	}
	a.api = c
	return c, nil
}

// call runs one request bounded by --timeout.
func (a *app) call(ctx context.Context, fn func(context.Context, *client.Client) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return a.explain(ctx, fn(rctx, c))
}

// Retries of a write whose answer was lost. The Idempotency-Key makes them
// safe: the server runs the write once and replays its answer.
const (
	writeAttempts = 3
	writeBackoff  = 500 * time.Millisecond
)

// write runs one write with an Idempotency-Key, retrying when the answer was
// lost on the way (a timeout, a dropped connection) or the server is still
// busy with the first attempt. Anything else is final.
func (a *app) write(ctx context.Context, key string, fn func(context.Context, *client.Client, client.CallOption) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	opt := client.WithIdempotencyKey(key)
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, a.timeout)
		err = fn(rctx, c, opt)
		cancel()
		if err != nil && ctx.Err() != nil {
			return interruptedWrite()
		}
		if err == nil || attempt == writeAttempts || !retryable(err) {
			return a.explain(ctx, err)
		}
		fmt.Fprintf(a.stderr, "retrying (attempt %d of %d): %s\n", attempt+1, writeAttempts, errorLine(err))
		if sleep(ctx, time.Duration(attempt)*writeBackoff) {
			return interruptedWrite()
		}
	}
}

// interruptedWrite is the error of a write cut short by the user: it may
// have been applied, and saying so keeps them from assuming either way.
func interruptedWrite() error {
	return codedf(codeInterrupted, "interrupted; the request may have been applied: check with otherix task list")
}

// keyOr returns key, or a fresh idempotency key when key is empty.
func (a *app) keyOr(key string) string {
	if key != "" {
		return key
	}
	return a.newKey()
}

// newIdempotencyKey returns a random key for one intended change.
func newIdempotencyKey() string { return "otherix-cli-" + rand.Text() }

// versionCommand prints the client's version.
func versionCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the otherix client version",
		Args:  cobra.NoArgs,
		Run: func(*cobra.Command, []string) {
			fmt.Fprintf(stdout, "otherix %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}

// groupCommand is a noun such as "vm" that only holds verbs. It runs (and
// prints its help) so that its argument check applies: cobra shows help for a
// command that cannot run without looking at its arguments, and
// "otherix vm frobnicate" must fail rather than exit 0.
func groupCommand(use, short string, aliases ...string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Aliases: aliases, Args: noCommand,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
}

// noCommand rejects an argument where a subcommand was expected.
func noCommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError(fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath()))
	}
	return nil
}

// exactArgs is cobra.ExactArgs with an error marked as a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError(fmt.Errorf("%s needs %s, got %d argument(s)", cmd.CommandPath(), what, len(args)))
		}
		return nil
	}
}
