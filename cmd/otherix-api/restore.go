package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/persistence/etcd"
)

func restoreCommand() *cobra.Command {
	var from, dataDir, name string
	var bump int64
	var fromDB bool
	cmd := &cobra.Command{
		Use:   "restore --from SNAPSHOT --data-dir DIR",
		Short: "Rebuild an empty data dir from a snapshot",
		Long: "Rebuild a data dir from a snapshot taken by otherix-api's backup loop.\n" +
			"The data dir must not hold a member already; start otherix-api on it afterwards.\n" +
			"The result is a single-member cluster (grow it again by joins, docs/ha.md) whose\n" +
			"revision is moved past any the lost cluster can have handed out since the\n" +
			"snapshot (100,000 per second of the snapshot's age, at least 1,000,000).",
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
			if bump <= 0 {
				bump = etcd.RevisionBump(from, time.Now())
			}
			if err := etcd.RestoreWith(from, dataDir, etcd.RestoreOptions{Name: name, Bump: bump, FromDataDir: fromDB}); err != nil {
				return err
			}
			// The cluster CA comes back with the data; written to
			// <data_dir>/pki now, it lets the restored replica start with
			// --peer-listen at once and issue its peer certificate.
			cfg := defaultConfig()
			cfg.DataDir, cfg.Etcd.Name = dataDir, name
			if _, err := bootstrapCA(cmd.Context(), cfg); err != nil {
				return fmt.Errorf("write the restored cluster's CA to %s: %w", filepath.Join(dataDir, "pki"), err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s (revision moved by %d)\n", from, dataDir, max(bump, etcd.MinRevisionBump))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "snapshot file")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data dir to create")
	cmd.Flags().StringVar(&name, "name", "", "etcd member name (default "+etcd.DefaultMember+"); the --name the replica will start with")
	cmd.Flags().Int64Var(&bump, "bump-revision", 0, "move the revision by this much (default: from the snapshot's age)")
	cmd.Flags().BoolVar(&fromDB, "from-data-dir", false,
		"--from is a stopped replica's database (DATA_DIR/member-data/member/snap/db), newer than its backups; it has no integrity hash")
	return cmd
}
