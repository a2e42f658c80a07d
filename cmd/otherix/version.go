package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/internal/buildinfo"
	"github.com/otherix/otherix/messages"
)

// versionReport is `otherix version -o json|yaml`.
type versionReport struct {
	Client messages.VersionInfo  `json:"client"`
	Server *messages.VersionInfo `json:"server,omitempty"`
}

// versionCommand prints the client's version and, unless --client, the
// server's. The client line comes first and always prints, so an
// unreachable server still leaves the client's version on screen.
func (a *app) versionCommand() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the otherix client version and the server's",
		Long: `Print the version of this client and of the control plane of the current
context. Logged in, the server's line adds its commit, build time, Go and etcd
versions; anonymous servers answer with the version alone. --client prints the
client's version without contacting any server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := buildinfo.Get()
			rep := versionReport{Client: messages.VersionInfo{Version: b.Version, Commit: b.Commit,
				BuildTime: b.Date, GoVersion: b.GoVersion, Platform: b.Platform}}
			var serverErr error
			if !clientOnly {
				serverErr = a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
					rep.Server, err = c.Version(ctx)
					return err
				})
			}
			switch a.output {
			case outputJSON, outputYAML:
				if serverErr != nil {
					return serverErr
				}
				if a.output == outputJSON {
					return writeJSON(a.stdout, rep)
				}
				return writeYAML(a.stdout, rep)
			}
			fmt.Fprintf(a.stdout, "otherix %s (%s %s)\n", b.Version, b.GoVersion, b.Platform)
			if serverErr != nil {
				return serverErr
			}
			if rep.Server != nil {
				fmt.Fprintf(a.stdout, "otherix-api %s%s at %s\n", rep.Server.Version, serverDetails(rep.Server), a.server)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print the client's version only, contacting no server")
	return cmd
}

// serverDetails renders what an authenticated caller learns beyond the
// version, or nothing for an anonymous answer.
func serverDetails(v *messages.VersionInfo) string {
	if v.Commit == "" && v.GoVersion == "" && v.EtcdVersion == "" {
		return ""
	}
	return fmt.Sprintf(" (commit %s, built %s, %s, etcd %s, %s)",
		orNone(v.Commit), orNone(v.BuildTime), orNone(v.GoVersion), orNone(v.EtcdVersion), orNone(v.Platform))
}
