package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// codeNoTerminal is the error of a command that needs a secret it can
// neither prompt for nor read from stdin.
const (
	codeNoTerminal  = "no_terminal"
	codeNotLoggedIn = "not_logged_in"
)

// stdinTerminal returns whether stdin is a terminal and how to read a
// secret from it without echo.
func stdinTerminal(stdin io.Reader) (func() bool, func() (string, error)) {
	f, ok := stdin.(*os.File)
	if !ok {
		return func() bool { return false }, func() (string, error) { return "", errors.New("stdin is not a terminal") }
	}
	fd := int(f.Fd())
	return func() bool { return term.IsTerminal(fd) }, func() (string, error) {
		b, err := term.ReadPassword(fd)
		return string(b), err
	}
}

// stdinLines reads stdin line by line, shared by every read of one command.
func (a *app) stdinLine(r **bufio.Reader, what string) (string, error) {
	if *r == nil {
		*r = bufio.NewReader(a.stdin)
	}
	line, err := (*r).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read %s from stdin: %w", what, err)
		}
		return "", usageError(fmt.Errorf("no %s on stdin", what))
	}
	return line, nil
}

// prompt asks for a secret on the terminal without echo.
func (a *app) prompt(label string) (string, error) {
	fmt.Fprintf(a.stderr, "%s: ", label)
	s, err := a.readSecret()
	fmt.Fprintln(a.stderr)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", strings.ToLower(label), err)
	}
	if s == "" {
		return "", usageError(fmt.Errorf("empty %s", strings.ToLower(label)))
	}
	return s, nil
}

// secret reads one secret: the first line of stdin with fromStdin, else a
// prompt on the terminal (twice when confirm is set).
func (a *app) secret(fromStdin bool, lines **bufio.Reader, label string, confirm bool) (string, error) {
	if fromStdin {
		return a.stdinLine(lines, strings.ToLower(label))
	}
	if !a.terminal() {
		return "", codedf(codeNoTerminal, "stdin is not a terminal to prompt for the %s: pass it with --password-stdin", strings.ToLower(label))
	}
	s, err := a.prompt(label)
	if err != nil || !confirm {
		return s, err
	}
	again, err := a.prompt("Repeat " + strings.ToLower(label))
	if err != nil {
		return "", err
	}
	if again != s {
		return "", usageError(errors.New("the two entries differ"))
	}
	return s, nil
}

// request runs fn against a client for server, bounded by --timeout, with
// a.server set so errors name the right API.
func (a *app) request(ctx context.Context, c *client.Client, server string, fn func(context.Context, *client.Client) error) error {
	a.server = server
	rctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return a.explain(ctx, fn(rctx, c))
}

// normalizeFingerprint accepts a SHA-256 fingerprint as hex, with or
// without colons and a "sha256:" prefix, and returns lower-case hex.
func normalizeFingerprint(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimPrefix(h, "sha256:")
	h = strings.ReplaceAll(h, ":", "")
	if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
		return "", usageError(fmt.Errorf("--ca-fingerprint %q: want the SHA-256 of the CA certificate as 64 hex digits", s))
	}
	return h, nil
}

// contextNameFor is the default context name for a server: its host:port.
func contextNameFor(server string) string {
	if u, err := url.Parse(server); err == nil && u.Host != "" {
		return u.Host
	}
	return server
}

type loginFlags struct {
	user, token, caFingerprint string
	passwordStdin, insecure    bool
}

func (a *app) loginCommand() *cobra.Command {
	var fl loginFlags
	cmd := &cobra.Command{
		Use:   "login URL",
		Short: "Log in to a cluster and make it the current context",
		Long: `Log in to the API at URL and save the session in a context of the config file
(~/.otherix/config, or --config / OTHERIX_CONFIG), which becomes current.

With --user the password is prompted for without echo, or read from the first
line of stdin with --password-stdin. With --token an otx_ API token is stored
instead of a session. The context is named after the server's host:port unless
--context names it. Sessions refresh themselves; log in again when one ends.`,
		Example: `  otherix login https://127.0.0.1:7080 --user admin@localhost --ca-fingerprint <printed by otherix-api>
  echo "$PASSWORD" | otherix login https://api.example:8443 --user me@example.com --password-stdin --context prod
  otherix login https://api.example:8443 --token "$OTHERIX_TOKEN" --context ci`,
		Args: exactArgs(1, "the API URL"),
		RunE: func(cmd *cobra.Command, args []string) error { return a.login(cmd.Context(), args[0], fl) },
	}
	f := cmd.Flags()
	f.StringVar(&fl.user, "user", "", "email address to log in as")
	f.BoolVar(&fl.passwordStdin, "password-stdin", false, "read the password from the first line of stdin")
	f.StringVar(&fl.token, "token", "", "log in with an otx_ API token instead of a password")
	f.StringVar(&fl.caFingerprint, "ca-fingerprint", "", "SHA-256 of the cluster CA certificate to pin (hex)")
	f.BoolVar(&fl.insecure, "insecure", false, "allow a plain http:// URL to a host other than loopback (the password and tokens travel in clear)")
	return cmd
}

// cleartextToRemote reports whether server is plain HTTP to a host that is
// not loopback: credentials sent there can be read on the way.
func cleartextToRemote(server string) bool {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "http" {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

func (a *app) login(ctx context.Context, rawURL string, fl loginFlags) error {
	server := strings.TrimRight(rawURL, "/")
	switch {
	case fl.token != "" && (fl.user != "" || fl.passwordStdin):
		return usageError(errors.New("--token cannot be combined with --user or --password-stdin"))
	case fl.token == "" && fl.user == "":
		return usageError(errors.New("--user EMAIL is required (or --token otx_…)"))
	case fl.token != "" && !strings.HasPrefix(fl.token, "otx_"):
		return usageError(errors.New("--token must be an otx_ API token"))
	}
	if !strings.Contains(server, "://") {
		return usageError(fmt.Errorf("login URL %q has no scheme: did you mean https://%s?", rawURL, server))
	}
	if cleartextToRemote(server) && !fl.insecure {
		return usageError(fmt.Errorf("%s is plain http to a remote host: the password and tokens would travel in clear; use https, or --insecure to accept that", server))
	}
	fp, err := normalizeFingerprint(fl.caFingerprint)
	if err != nil {
		return err
	}
	if _, err := client.New(server); err != nil {
		return usageError(fmt.Errorf("login URL: %w", err))
	}
	if fp != "" && !isHTTPS(server) {
		return usageError(fmt.Errorf("--ca-fingerprint pins the CA of an https server; %s is plain http", server))
	}
	path, cfg, err := a.config()
	if err != nil {
		return err
	}
	name := a.contextFlag
	if name == "" {
		name = contextNameFor(server)
	}
	cx := cliContext{Name: name, Server: server}
	switch {
	case fp != "":
		// First contact: fetch the CA, check it against the pin and the
		// server's chain against it, before any credential is sent.
		a.server = server
		rctx, cancel := context.WithTimeout(ctx, a.timeout)
		ca, err := fetchPinnedCA(rctx, server, fp)
		cancel()
		if err != nil {
			return a.explain(ctx, err)
		}
		cx.CAFingerprint, cx.CAPEM = fp, encodeCA(ca)
	case isHTTPS(server):
		// Keep the CA already pinned for this server, if any; else the
		// system roots decide.
		if old := pinnedContextFor(cfg, name, server); old != nil {
			cx.CAFingerprint, cx.CAPEM = old.CAFingerprint, old.CAPEM
		}
	}
	opts, err := a.transportOptions(&cx)
	if err != nil {
		return err
	}
	anon, _ := client.New(server, opts...)
	var me *messages.UserView
	if fl.token != "" {
		c, _ := client.New(server, append(opts, client.WithToken(fl.token))...)
		if err := a.request(ctx, c, server, func(ctx context.Context, c *client.Client) (err error) {
			me, err = c.Me(ctx)
			return err
		}); err != nil {
			return err
		}
		cx.APIToken, cx.User = fl.token, me.Email
		cx.Servers = a.learnReplicas(ctx, c, server)
	} else {
		var lines *bufio.Reader
		password, err := a.secret(fl.passwordStdin, &lines, "Password", false)
		if err != nil {
			return err
		}
		var pair *messages.TokenPair
		if err := a.request(ctx, anon, server, func(ctx context.Context, c *client.Client) (err error) {
			pair, err = c.Login(ctx, fl.user, password)
			return err
		}); err != nil {
			return err
		}
		cx.AccessToken, cx.RefreshToken = pair.AccessToken, pair.RefreshToken
		c, _ := client.New(server, append(opts, client.WithToken(pair.AccessToken))...)
		if err := a.request(ctx, c, server, func(ctx context.Context, c *client.Client) (err error) {
			me, err = c.Me(ctx)
			return err
		}); err != nil {
			return err
		}
		cx.User = me.Email
		cx.Servers = a.learnReplicas(ctx, c, server)
	}
	cfg.upsert(cx)
	cfg.CurrentContext = name
	if err := saveConfig(path, cfg); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "Logged in to %s as %s (%s). Context %q is now current.\n", server, me.Email, me.Role, name)
	if len(cx.Servers) > 1 {
		fmt.Fprintf(a.stderr, "The cluster has %d replicas; requests fail over between them: %s\n", len(cx.Servers), strings.Join(cx.Servers, ", "))
	}
	if fp != "" {
		fmt.Fprintf(a.stderr, "Pinned cluster CA %s for context %q: only certificates it signed are trusted for %s.\n", fp, name, server)
	}
	return nil
}

// pinnedContextFor returns the context that pins a CA for server: the one
// called name if it is for server, else any other for server; nil if none.
func pinnedContextFor(cfg *cliConfig, name, server string) *cliContext {
	if cx := cfg.context(name); cx != nil && cx.Server == server && cx.CAPEM != "" {
		return cx
	}
	for i := range cfg.Contexts {
		if cx := &cfg.Contexts[i]; cx.Server == server && cx.CAPEM != "" {
			return cx
		}
	}
	return nil
}

// currentContext returns the context --context names, else the current one.
func (a *app) currentContext(cfg *cliConfig) (*cliContext, error) {
	name := a.contextFlag
	if name == "" {
		name = cfg.CurrentContext
	}
	if name == "" {
		return nil, codedf(codeNotLoggedIn, "no current context: log in with otherix login URL --user EMAIL")
	}
	cx := cfg.context(name)
	if cx == nil {
		return nil, usageError(fmt.Errorf("no context %q in the config (see otherix config get-contexts)", name))
	}
	return cx, nil
}

func (a *app) logoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "End the session of the current context and forget its credentials",
		Long: `End the session of the current context (or --context) on the server and remove
its tokens from the config file. The context itself stays, so "otherix login"
to the same server is short. An otx_ API token is only forgotten locally: revoke
it with "otherix token revoke ID" if it is no longer needed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, cfg, err := a.config()
			if err != nil {
				return err
			}
			cx, err := a.currentContext(cfg)
			if err != nil {
				return err
			}
			if cx.RefreshToken != "" {
				opts, err := a.transportOptions(cx)
				var c *client.Client
				if err == nil {
					c, err = client.New(cx.Server, append(opts, client.WithToken(cx.AccessToken))...)
				}
				if err == nil {
					err = a.request(cmd.Context(), c, cx.Server, func(ctx context.Context, c *client.Client) error {
						return c.Logout(ctx, cx.RefreshToken)
					})
				}
				if err != nil {
					fmt.Fprintf(a.stderr, "warning: the server did not confirm the logout (%s); the local credentials are removed anyway\n", errorLine(err))
				}
			}
			if cx.APIToken != "" {
				fmt.Fprintln(a.stderr, "note: the API token is only forgotten here; it stays valid until revoked (otherix token revoke ID)")
			}
			cx.AccessToken, cx.RefreshToken, cx.APIToken = "", "", ""
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Logged out of %s (context %q).\n", cx.Server, cx.Name)
			return nil
		},
	}
}

func (a *app) whoamiCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who the CLI is logged in as, and where",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var me *messages.UserView
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				me, err = c.Me(ctx)
				return err
			}); err != nil {
				return err
			}
			switch a.output {
			case outputJSON:
				return writeJSON(a.stdout, me)
			case outputYAML:
				return writeYAML(a.stdout, me)
			}
			return writeTable(a.stdout, [][]string{
				{"User:", me.Email},
				{"Name:", orNone(me.DisplayName)},
				{"Role:", me.Role},
				{"ID:", me.ID},
				{"Context:", orNone(a.contextName)},
				{"Server:", a.server},
			})
		},
	}
}

func (a *app) configCommand() *cobra.Command {
	cmd := groupCommand("config", "Show and switch contexts (clusters and credentials)")
	cmd.AddCommand(
		&cobra.Command{
			Use:   "get-contexts",
			Short: "List the contexts",
			Args:  cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				_, cfg, err := a.config()
				if err != nil {
					return err
				}
				view := maskConfig(cfg)
				return a.emit(newItemList(view.Contexts), func(bool) [][]string {
					rows := [][]string{{"CURRENT", "NAME", "SERVER", "USER", "AUTH"}}
					for _, cx := range cfg.Contexts {
						cur := ""
						if cx.Name == cfg.CurrentContext {
							cur = "*"
						}
						rows = append(rows, []string{cur, cx.Name, cx.Server, orNone(cx.User), authKind(cx)})
					}
					return rows
				})
			},
		},
		&cobra.Command{
			Use:   "use-context NAME",
			Short: "Make a context the current one",
			Args:  exactArgs(1, "a context name"),
			RunE: func(_ *cobra.Command, args []string) error {
				path, cfg, err := a.config()
				if err != nil {
					return err
				}
				if cfg.context(args[0]) == nil {
					return usageError(fmt.Errorf("no context %q in the config (see otherix config get-contexts)", args[0]))
				}
				cfg.CurrentContext = args[0]
				if err := saveConfig(path, cfg); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Switched to context %q.\n", args[0])
				return nil
			},
		},
		&cobra.Command{
			Use:   "delete-context NAME",
			Short: "Remove a context and its credentials from the config",
			Long: `Remove a context and its credentials from the config file. The session is not
ended on the server: run "otherix logout --context NAME" first for that.`,
			Args: exactArgs(1, "a context name"),
			RunE: func(_ *cobra.Command, args []string) error {
				path, cfg, err := a.config()
				if err != nil {
					return err
				}
				if !cfg.remove(args[0]) {
					return usageError(fmt.Errorf("no context %q in the config (see otherix config get-contexts)", args[0]))
				}
				if err := saveConfig(path, cfg); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "Deleted context %q.\n", args[0])
				return nil
			},
		},
		&cobra.Command{
			Use:   "view",
			Short: "Print the config with every token masked",
			Args:  cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				_, cfg, err := a.config()
				if err != nil {
					return err
				}
				if a.output == outputJSON {
					return writeJSON(a.stdout, maskConfig(cfg))
				}
				return writeYAML(a.stdout, maskConfig(cfg))
			},
		},
	)
	return cmd
}

// maskConfig is a copy of cfg with every token replaced by REDACTED and
// each pinned CA certificate (public) abbreviated.
func maskConfig(cfg *cliConfig) cliConfig {
	out := cliConfig{CurrentContext: cfg.CurrentContext, Contexts: make([]cliContext, len(cfg.Contexts))}
	for i, cx := range cfg.Contexts {
		cx.AccessToken, cx.RefreshToken, cx.APIToken = masked(cx.AccessToken), masked(cx.RefreshToken), masked(cx.APIToken)
		cx.CAPEM = abbreviatedPEM(cx.CAPEM)
		out.Contexts[i] = cx
	}
	return out
}

// authKind says how a context authenticates.
func authKind(cx cliContext) string {
	switch {
	case cx.APIToken != "":
		return "api-token"
	case cx.RefreshToken != "" || cx.AccessToken != "":
		return "session"
	}
	return none
}

// refreshSession refreshes the session of context name whose refresh token
// this process holds (rt), under the config lock so that two otherix
// processes sharing the config never present the same refresh token: the
// second one to take the lock rereads the config and, if the first already
// rotated rt, uses the pair the first saved instead of refreshing again
// (the server would see a rotated-out token and, past its short grace,
// revoke the whole session as stolen). The new pair is saved before the lock
// is released. c is the process's client; Refresh on it never refreshes
// itself.
func (a *app) refreshSession(ctx context.Context, c *client.Client, path, name, rt string) (*messages.TokenPair, error) {
	unlock, err := lockConfig(ctx, path)
	if err != nil {
		return nil, err
	}
	defer unlock()
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	cx := cfg.context(name)
	if cx != nil && cx.RefreshToken != "" && cx.RefreshToken != rt && cx.AccessToken != "" {
		// Another process refreshed (or logged in again) since we read it.
		return &messages.TokenPair{AccessToken: cx.AccessToken, RefreshToken: cx.RefreshToken, TokenType: "Bearer"}, nil
	}
	pair, err := c.Refresh(ctx, rt)
	if err != nil {
		return nil, err
	}
	if cx == nil {
		fmt.Fprintf(a.stderr, "warning: the session was refreshed but context %q is gone from the config; not saved\n", name)
		return pair, nil
	}
	cx.AccessToken, cx.RefreshToken = pair.AccessToken, pair.RefreshToken
	if urls := a.refreshReplicas(ctx, cx, c.Server(), pair.AccessToken); len(urls) > 0 {
		cx.Servers = urls
	}
	if err := saveConfig(path, cfg); err != nil {
		fmt.Fprintf(a.stderr, "warning: the session was refreshed but could not be saved (log in again next time): %v\n", err)
	}
	return pair, nil
}
