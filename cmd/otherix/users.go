package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

func (a *app) userCommand() *cobra.Command {
	cmd := groupCommand("user", "Manage users (admin) and your own password", "users")
	cmd.AddCommand(a.userCreateCommand(), a.userListCommand(), a.userGetCommand(), a.userDeleteCommand(),
		a.userSetRoleCommand(), a.userPasswdCommand(), a.userQuotaCommand())
	return cmd
}

// userRows is the table of users; wide adds UPDATED and DISABLED.
func userRows(users []messages.UserView, wide bool, now time.Time) [][]string {
	head := []string{"ID", "EMAIL", "NAME", "ROLE", "AGE"}
	if wide {
		head = append(head, "DISABLED")
	}
	rows := [][]string{head}
	for _, u := range users {
		r := []string{u.ID, u.Email, orNone(u.DisplayName), u.Role, age(u.CreatedAt, now)}
		if wide {
			r = append(r, fmt.Sprint(u.Disabled))
		}
		rows = append(rows, r)
	}
	return rows
}

func (a *app) emitUser(u *messages.UserView) error {
	return a.emit(u, func(wide bool) [][]string { return userRows([]messages.UserView{*u}, wide, a.now()) })
}

func checkRole(role string) error {
	if !messages.ValidRole(role) {
		return usageError(fmt.Errorf("unknown role %q: want admin, operator, developer or viewer", role))
	}
	return nil
}

func (a *app) userCreateCommand() *cobra.Command {
	var role, displayName string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "create EMAIL --role ROLE",
		Short: "Create a user (admin)",
		Long: `Create a user. The initial password is prompted for twice without echo, or read
from the first line of stdin with --password-stdin. It needs at least 12
characters and must not be a common password.`,
		Example: `  otherix user create dev@example.com --role developer --display-name "Dev One"
  printf '%s\n' "$PW" | otherix user create ci@example.com --role operator --password-stdin`,
		Args: exactArgs(1, "an email address"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if role == "" {
				return usageError(errors.New("--role is required (admin, operator, developer or viewer)"))
			}
			if err := checkRole(role); err != nil {
				return err
			}
			var lines *bufio.Reader
			pw, err := a.secret(passwordStdin, &lines, "Password", true)
			if err != nil {
				return err
			}
			var u *messages.UserView
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				u, err = c.CreateUser(ctx, messages.CreateUserRequest{Email: args[0], DisplayName: displayName, Role: role, Password: pw})
				return err
			}); err != nil {
				return err
			}
			return a.emitUser(u)
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "admin, operator, developer or viewer (required)")
	f.StringVar(&displayName, "display-name", "", "the user's name as shown")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the initial password from the first line of stdin")
	return cmd
}

func (a *app) userListCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List users (admin)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			users, err := listAll(cmd.Context(), a, limit, (*client.Client).ListUsers)
			if err != nil {
				return err
			}
			return a.emit(newItemList(users), func(wide bool) [][]string { return userRows(users, wide, a.now()) })
		},
	}
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	return cmd
}

// userID resolves ref, an id or an email address, to a user id.
func (a *app) userID(ctx context.Context, ref string) (string, error) {
	if !strings.Contains(ref, "@") {
		return ref, nil
	}
	users, err := listAll(ctx, a, 200, (*client.Client).ListUsers)
	if err != nil {
		return "", err
	}
	want := messages.NormalizeEmail(ref)
	for _, u := range users {
		if u.Email == want {
			return u.ID, nil
		}
	}
	return "", codedf("not_found", "user %q not found", ref)
}

func (a *app) userGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID|EMAIL",
		Short: "Show a user (admin)",
		Args:  exactArgs(1, "a user id or email"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.userID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			var u *messages.UserView
			var q *messages.QuotaView
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				if u, err = c.GetUser(ctx, id); err != nil {
					return err
				}
				q, err = c.GetQuota(ctx, id)
				return err
			}); err != nil {
				return err
			}
			// -o json prints the user as the API returns it; the table
			// adds the quota, used/limit per resource ("-": no limit).
			return a.emit(u, func(wide bool) [][]string {
				rows := userRows([]messages.UserView{*u}, wide, a.now())
				head, row := quotaColumns(q)
				return [][]string{append(rows[0], head...), append(rows[1], row...)}
			})
		},
	}
}

func (a *app) userDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete ID|EMAIL",
		Aliases: []string{"rm"},
		Short:   "Delete a user (admin)",
		Args:    exactArgs(1, "a user id or email"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.userID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				return c.DeleteUser(ctx, id)
			}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "user/%s deleted\n", args[0])
			return nil
		},
	}
}

func (a *app) userSetRoleCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "set-role ID|EMAIL ROLE",
		Short: "Change a user's role (admin)",
		Args:  exactArgs(2, "a user id or email and a role"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRole(args[1]); err != nil {
				return err
			}
			id, err := a.userID(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			var u *messages.UserView
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				u, err = c.SetRole(ctx, id, args[1])
				return err
			}); err != nil {
				return err
			}
			return a.emitUser(u)
		},
	}
}

func (a *app) userPasswdCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "passwd",
		Short: "Change your own password",
		Long: `Change your password. The current and the new password are prompted for without
echo, or read from stdin: the current on the first line, the new on the second.
A password change ends every session of the user; the CLI logs in again with
the new password so the current context keeps working.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cur, next string
			if a.terminal() {
				var err error
				if cur, err = a.prompt("Current password"); err != nil {
					return err
				}
				var lines *bufio.Reader
				if next, err = a.secret(false, &lines, "New password", true); err != nil {
					return err
				}
			} else {
				var lines *bufio.Reader
				var err error
				if cur, err = a.stdinLine(&lines, "current password"); err != nil {
					return err
				}
				if next, err = a.stdinLine(&lines, "new password"); err != nil {
					return err
				}
			}
			var me *messages.UserView
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				me, err = c.UpdateMe(ctx, messages.UpdateMeRequest{CurrentPassword: cur, NewPassword: next})
				return err
			}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Password changed for %s.\n", me.Email)
			return a.relogin(cmd.Context(), me.Email, next)
		},
	}
}

// relogin replaces the session of the context in use after a password
// change ended it. A context with an API token or none is left alone.
func (a *app) relogin(ctx context.Context, email, password string) error {
	if a.contextName == "" {
		return nil
	}
	path, cfg, err := a.config()
	if err != nil {
		return err
	}
	cx := cfg.context(a.contextName)
	if cx == nil || cx.RefreshToken == "" {
		return nil
	}
	opts, err := a.transportOptions(cx)
	if err != nil {
		return err
	}
	anon, err := client.New(cx.Server, opts...)
	if err != nil {
		return err
	}
	var pair *messages.TokenPair
	if err := a.request(ctx, anon, cx.Server, func(ctx context.Context, c *client.Client) (err error) {
		pair, err = c.Login(ctx, email, password)
		return err
	}); err != nil {
		fmt.Fprintf(a.stderr, "warning: could not log in again (%s): run otherix login %s --user %s\n", errorLine(err), cx.Server, email)
		return nil
	}
	cx.AccessToken, cx.RefreshToken = pair.AccessToken, pair.RefreshToken
	return saveConfig(path, cfg)
}

func (a *app) tokenCommand() *cobra.Command {
	cmd := groupCommand("token", "Manage long-lived otx_ API tokens", "tokens")
	cmd.AddCommand(a.tokenCreateCommand(), a.tokenListCommand(), a.tokenRevokeCommand())
	return cmd
}

// tokenRows is the table of API tokens; wide adds OWNER.
func tokenRows(tokens []messages.APITokenView, wide bool, now time.Time) [][]string {
	head := []string{"ID", "NAME", "ROLE", "AGE", "EXPIRES", "LAST USED"}
	if wide {
		head = append(head, "OWNER")
	}
	rows := [][]string{head}
	for _, k := range tokens {
		exp, used := "never", "never"
		if k.ExpiresAt != nil {
			exp = k.ExpiresAt.UTC().Format(time.RFC3339)
		}
		if k.LastUsedAt != nil {
			used = age(*k.LastUsedAt, now) + " ago"
		}
		r := []string{k.ID, k.Name, k.Role, age(k.CreatedAt, now), exp, used}
		if wide {
			r = append(r, k.Owner)
		}
		rows = append(rows, r)
	}
	return rows
}

func (a *app) tokenCreateCommand() *cobra.Command {
	var role string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an API token (shown once)",
		Long: `Create a long-lived otx_ API token for scripts and CI, with your role or a lower
one (--role) and an optional lifetime (--ttl). The token is printed once and
never again: store it now. Use it with "otherix login URL --token otx_…" or as
"Authorization: Bearer otx_…".`,
		Example: `  otherix token create ci --role developer --ttl 720h
  otherix token create backup -o json | jq -r .token`,
		Args: exactArgs(1, "a token name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if role != "" {
				if err := checkRole(role); err != nil {
					return err
				}
			}
			if ttl < 0 {
				return usageError(fmt.Errorf("--ttl must not be negative, got %s", ttl))
			}
			req := messages.CreateAPITokenRequest{Name: args[0], Role: role}
			if ttl > 0 {
				req.TTL = ttl.String()
			}
			var created *messages.CreatedAPIToken
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				created, err = c.CreateAPIToken(ctx, req)
				return err
			}); err != nil {
				return err
			}
			fmt.Fprintln(a.stderr, "warning: this is the only time the token is shown; store it now, it cannot be retrieved again")
			switch a.output {
			case outputJSON:
				return writeJSON(a.stdout, created)
			case outputYAML:
				return writeYAML(a.stdout, created)
			}
			if err := writeTable(a.stdout, tokenRows([]messages.APITokenView{created.APIToken}, a.output == outputWide, a.now())); err != nil {
				return err
			}
			_, err := fmt.Fprintf(a.stdout, "\nToken: %s\n", created.Token)
			return err
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "role of the token: yours (default) or a lower one")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lifetime, such as 720h (default: does not expire)")
	return cmd
}

func (a *app) tokenListCommand() *cobra.Command {
	var all bool
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List your API tokens (--all: everybody's, admin)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tokens, err := listAll(cmd.Context(), a, limit, func(c *client.Client, ctx context.Context, o client.ListOptions, opts ...client.CallOption) ([]messages.APITokenView, string, error) {
				return c.ListAPITokens(ctx, all, o, opts...)
			})
			if err != nil {
				return err
			}
			return a.emit(newItemList(tokens), func(wide bool) [][]string { return tokenRows(tokens, wide || all, a.now()) })
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "list every user's tokens (admin)")
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	return cmd
}

func (a *app) tokenRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID",
		Aliases: []string{"delete", "rm"},
		Short:   "Revoke an API token",
		Args:    exactArgs(1, "a token id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				return c.RevokeAPIToken(ctx, args[0])
			}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "token/%s revoked\n", args[0])
			return nil
		},
	}
}
