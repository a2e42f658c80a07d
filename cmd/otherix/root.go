package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/otherix/otherix/internal/buildinfo"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// Defaults of the global flags.
const (
	defaultServer  = "https://127.0.0.1:7080"
	defaultTimeout = 30 * time.Second
	// defaultWaitTimeout bounds a --wait: long enough for an image download
	// and a boot, short enough that a stuck task does not hang a script.
	defaultWaitTimeout = 10 * time.Minute
	// envServer names the environment variable that, like --server, points
	// one call at another API than the current context's.
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
	stdin          io.Reader
	stdout, stderr io.Writer
	// serverFlag is --server (or OTHERIX_SERVER): an override for one call.
	serverFlag string
	// configFlag is --config; contextFlag is --context.
	configFlag, contextFlag string
	// server is the API's base URL the call goes to, resolved by client()
	// from --server or the context.
	server string
	// contextName is the context client() took credentials from ("" if none).
	contextName string
	// output is the -o format, validated before any command runs.
	output string
	// timeout bounds one request; waits have their own budget.
	timeout time.Duration
	// newKey makes idempotency keys; a seam so tests can pin them.
	newKey func() string
	// now is the clock ages are measured against; a seam for tests.
	now func() time.Time
	// terminal reports whether stdin is a terminal to prompt on; readSecret
	// reads one line from it without echo. Seams for tests.
	terminal   func() bool
	readSecret func() (string, error)

	// pinnedCA is the fingerprint of the cluster CA the call trusts alone
	// ("" when it uses the system roots or plain http), for error messages.
	pinnedCA string

	api *client.Client // built lazily by client()

	// dryRun is --dry-run of create, apply, delete and vm create: every
	// write is sent with ?dry_run=true (dryrun.go).
	dryRun bool

	// stderrTTY reports whether stderr is a terminal, where --wait draws a
	// progress bar; a seam for tests. barDrawn says a bar line is open.
	stderrTTY func() bool
	barDrawn  bool
}

// Exit codes.
const (
	exitOK = 0
	// exitFailed: the command ran and failed: an API error, a task that
	// failed or was cancelled, an unreachable server.
	exitFailed = 1
	// exitUsage: the command line is wrong (unknown command or flag, wrong
	// arguments, a bad flag value); nothing was sent.
	exitUsage = 2
)

// run executes the CLI with args and returns the process exit code. Errors
// are printed once, here, as "Error: <message> [<code>]".
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runIO(ctx, args, os.Stdin, stdout, stderr)
}

// runIO is run with stdin given, for --password-stdin and tests.
func runIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	printError(stderr, err)
	return exitCode(err)
}

// exitCode is the process status for a command's error.
func exitCode(err error) int {
	var ce *cliError
	if errors.As(err, &ce) && ce.usage {
		return exitUsage
	}
	return exitFailed
}

// markArgsUsage makes every argument check in the tree report a usage
// error, cobra's own (cobra.NoArgs, cobra.ExactArgs) included, so that a
// wrong number of arguments exits 2 like an unknown flag does.
func markArgsUsage(cmd *cobra.Command) {
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			err := check(c, args)
			var ce *cliError
			if err == nil || errors.As(err, &ce) && ce.usage {
				return err
			}
			return usageError(err)
		}
	}
	for _, sub := range cmd.Commands() {
		markArgsUsage(sub)
	}
}

// newRootCommand builds the whole command tree writing to stdout and stderr.
func newRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, newKey: newIdempotencyKey, now: time.Now}
	a.terminal, a.readSecret = stdinTerminal(stdin)
	a.stderrTTY = writerTerminal(stderr)
	root := &cobra.Command{
		Use:   "otherix",
		Short: "Manage virtual machines on an Otherix cluster",
		Long: `otherix talks to the Otherix control plane (otherix-api) over its REST API.

Output: -o table (default) and -o wide print columns; -o json and -o yaml print
resources exactly as the API returns them. A list prints as {"items":[…]} with
every page already followed; an accepted write prints {"task":…,"vm":…}.

Exit status: 0 on success; 1 when the command ran and failed (an API error, a
task that failed or was cancelled, an unreachable server); 2 when the command
line is wrong (unknown command or flag, wrong arguments, a bad value), in which
case nothing was sent.

Start with "otherix login URL --user EMAIL". Clusters and credentials are kept
as contexts in ~/.otherix/config (--config or OTHERIX_CONFIG to use another
file, --context to use another context for one call).`,
		Version:           buildinfo.Version(),
		SilenceUsage:      true,
		SilenceErrors:     true,
		Args:              noCommand,
		PersistentPreRunE: func(*cobra.Command, []string) error { return a.validate() },
		RunE:              func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })

	f := root.PersistentFlags()
	f.StringVar(&a.serverFlag, "server", os.Getenv(envServer), "API base URL for this call instead of the context's (env "+envServer+"; default "+defaultServer+" without a context)")
	f.StringVar(&a.configFlag, "config", "", "CLI config file (env "+envConfig+"; default ~/.otherix/config)")
	f.StringVar(&a.contextFlag, "context", "", "context to use instead of the current one")
	f.StringVarP(&a.output, "output", "o", outputTable, "output format: "+strings.Join(outputFormats, "|"))
	f.DurationVar(&a.timeout, "timeout", defaultTimeout, "time limit for one API request")

	root.AddCommand(a.vmCommand(), a.networkCommand(), a.poolCommand(), a.volumeCommand(), a.taskCommand(), a.createCommand(), a.deleteCommand(),
		a.loginCommand(), a.logoutCommand(), a.whoamiCommand(), a.configCommand(), a.userCommand(), a.tokenCommand(),
		a.nodeCommand(), a.clusterCommand(), a.imageCommand(),
		a.getCommand(), a.describeCommand(), a.applyCommand(),
		a.versionCommand(),
		a.debugCommand(),
		a.docsCommand(),
		a.explainCommand(),
		a.eventsCommand())
	markArgsUsage(root)
	a.addNameCompletion(root)
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

// client returns the SDK client for this call, building it on first use:
// the server and credentials of the context (--context, else the current
// one), or --server for one call.
func (a *app) client() (*client.Client, error) {
	if a.api != nil {
		return a.api, nil
	}
	path, cfg, err := a.config()
	if err != nil {
		return nil, err
	}
	cx, err := a.pickContext(cfg)
	if err != nil {
		return nil, err
	}
	a.server = defaultServer
	if cx != nil {
		a.server, a.contextName = cx.Server, cx.Name
	}
	opts, err := a.transportOptions(cx)
	if err != nil {
		return nil, err
	}
	if cx != nil {
		switch {
		case cx.APIToken != "":
			opts = append(opts, client.WithToken(cx.APIToken))
		case cx.AccessToken != "" || cx.RefreshToken != "":
			// The refresh is locked against other otherix processes sharing
			// this config (auth.go: refreshSession); c is set below, before
			// any request can need it.
			name := cx.Name
			opts = append(opts, client.WithSession(cx.AccessToken, cx.RefreshToken, nil),
				client.WithRefresher(func(ctx context.Context, rt string) (*messages.TokenPair, error) {
					return a.refreshSession(ctx, a.api, path, name, rt)
				}))
		}
	}
	if cx != nil && len(cx.Servers) > 0 {
		fo, err := a.failoverOptions(cx)
		if err != nil {
			return nil, err
		}
		opts = append(opts, fo...)
	}
	c, err := client.New(a.server, opts...)
	if err != nil {
		if a.serverFlag != "" {
			return nil, usageError(fmt.Errorf("--server: %w", err))
		}
		return nil, usageError(fmt.Errorf("context %q: %w", a.contextName, err))
	}
	a.api = c
	return c, nil
}

// pickContext returns the context this call uses, or nil. With --server the
// context is used only if it is for that server or lists it among its
// replicas (else another context that does, else none): credentials never go
// to a server they are not for.
func (a *app) pickContext(cfg *cliConfig) (*cliContext, error) {
	name := cmp.Or(a.contextFlag, cfg.CurrentContext)
	cx := cfg.context(name)
	if a.contextFlag != "" && cx == nil {
		return nil, usageError(fmt.Errorf("no context %q in the config (see otherix config get-contexts)", a.contextFlag))
	}
	if a.serverFlag == "" {
		return cx, nil
	}
	server := strings.TrimRight(a.serverFlag, "/")
	if cx != nil && strings.TrimRight(cx.Server, "/") == server {
		return cx, nil
	}
	for i := range cfg.Contexts {
		if strings.TrimRight(cfg.Contexts[i].Server, "/") == server {
			return &cfg.Contexts[i], nil
		}
	}
	// A replica of a context's cluster is that cluster: its credentials
	// and CA pin hold there, and the call starts at the replica named.
	for _, c := range append([]*cliContext{cx}, contextPtrs(cfg)...) {
		if c != nil && slices.ContainsFunc(c.Servers, func(s string) bool { return strings.TrimRight(s, "/") == server }) {
			at := *c
			at.Server = server
			return &at, nil
		}
	}
	return &cliContext{Server: server}, nil
}

// contextPtrs points at every context of cfg.
func contextPtrs(cfg *cliConfig) []*cliContext {
	out := make([]*cliContext, len(cfg.Contexts))
	for i := range cfg.Contexts {
		out[i] = &cfg.Contexts[i]
	}
	return out
}

// configPath is --config, else OTHERIX_CONFIG, else ~/.otherix/config.
func (a *app) configPath() (string, error) {
	if p := cmp.Or(a.configFlag, os.Getenv(envConfig)); p != "" {
		return p, nil
	}
	return defaultConfigPath()
}

// config reads the CLI config.
func (a *app) config() (string, *cliConfig, error) {
	path, err := a.configPath()
	if err != nil {
		return "", nil, err
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return "", nil, err
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(a.stderr, "warning: %s is readable by others (mode %04o); it holds credentials: chmod 600 it\n", path, st.Mode().Perm())
	}
	return path, cfg, nil
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
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		// cobra applies its default distance only on its own error path.
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if sugg := cmd.SuggestionsFor(args[0]); len(sugg) > 0 {
			msg += fmt.Sprintf("; did you mean %q?", cmd.CommandPath()+" "+sugg[0])
		}
		return usageError(errors.New(msg))
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

// writerTerminal reports whether w is a terminal (a file on one).
func writerTerminal(w io.Writer) func() bool {
	f, ok := w.(*os.File)
	if !ok {
		return func() bool { return false }
	}
	fd := int(f.Fd())
	return func() bool { return term.IsTerminal(fd) }
}
