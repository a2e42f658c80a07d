package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/persistence/etcd"
)

func restoreCommand() *cobra.Command {
	var from, dataDir, name string
	cmd := &cobra.Command{
		Use:   "restore --from SNAPSHOT --data-dir DIR",
		Short: "Rebuild an empty data dir from a snapshot",
		Long: "Rebuild a data dir from a snapshot taken by otherix-api's backup loop.\n" +
			"The data dir must not hold a member already; start otherix-api on it afterwards.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || dataDir == "" {
				return fmt.Errorf("restore needs --from and --data-dir")
			}
			var err error
			if from, err = filepath.Abs(from); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			if dataDir, err = filepath.Abs(dataDir); err != nil {
				return fmt.Errorf("--data-dir: %w", err)
			}
			if err := etcd.Restore(from, dataDir, name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s\n", from, dataDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "snapshot file")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data dir to create")
	cmd.Flags().StringVar(&name, "name", "", "etcd member name (default "+etcd.DefaultMember+")")
	return cmd
}
