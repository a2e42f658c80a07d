package main

import (
	"context"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
)

// debugCommand groups what an admin asks a replica about itself.
func (a *app) debugCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "debug",
		Short: "Profile a control-plane replica (admin)",
	}
	cmd.AddCommand(a.debugPprofCommand())
	return cmd
}

func (a *app) debugPprofCommand() *cobra.Command {
	var seconds, debug int
	var file string
	cmd := &cobra.Command{
		Use:   "pprof PROFILE",
		Short: "Fetch a runtime profile or the goroutine dump of the replica you talk to",
		Long: `Fetch a runtime profile of the control-plane replica this context talks to
(use --server to pick one replica): profile (CPU, over --seconds), trace,
goroutine, heap, allocs, block, mutex or threadcreate. The output is pprof's
format, for go tool pprof, or text with --debug 1; "goroutine --debug 2" is
the stack of every goroutine, without stopping the process. Admin only.
An agent serves the same on its local socket (docs/operations.md).`,
		Example: `  otherix debug pprof goroutine --debug 2
  otherix debug pprof profile --seconds 20 -f cpu.pprof && go tool pprof cpu.pprof`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out []byte
			// A CPU profile or trace takes its seconds before the answer starts.
			a.timeout += time.Duration(seconds) * time.Second
			err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				out, err = c.DebugProfile(ctx, args[0], seconds, debug)
				return err
			})
			if err != nil {
				return err
			}
			if file != "" {
				return os.WriteFile(file, out, 0o600)
			}
			_, err = a.stdout.Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&seconds, "seconds", 0, "length of a CPU profile or trace (server default 30, at most 120)")
	f.IntVar(&debug, "debug", 0, "0: pprof's format; 1: text; 2: full goroutine stacks")
	f.StringVarP(&file, "file", "f", "", "write to this file (mode 0600) instead of stdout")
	return cmd
}
