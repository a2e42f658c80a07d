package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/otherix/otherix/internal/buildinfo"
)

// docsCommand generates reference documentation from the command tree
// itself, so it cannot drift from the flags: `make man` and the otherix
// package's man pages come from it. Hidden: a build step, not a user verb.
func (a *app) docsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:    "docs",
		Short:  "Generate reference documentation from the command tree",
		Hidden: true,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "man DIR",
		Short: "Write a man page (section 1) per command into DIR",
		Args:  exactArgs(1, "a directory"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // reproducible: no generation date
			header := &doc.GenManHeader{Title: "OTHERIX", Section: "1", Source: "otherix " + buildinfo.Version(),
				Manual: "Otherix manual"}
			if err := doc.GenManTree(root, header, args[0]); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			return nil
		},
	})
	return cmd
}
