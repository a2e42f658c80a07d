package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// taskCommand is "otherix task …".
func (a *app) taskCommand() *cobra.Command {
	cmd := groupCommand("task", "Follow and cancel asynchronous operations", "tasks")
	cmd.AddCommand(a.taskListCommand(), a.taskGetCommand(), a.taskWaitCommand(), a.taskCancelCommand())
	return cmd
}

func (a *app) taskListCommand() *cobra.Command {
	var limit int
	var watch bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List tasks",
		Long: `List every task, following the API's pages. -o json|yaml prints {"items":[…]}
with every task exactly as the API returns it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch {
				return a.listAndWatch(cmd.Context(), kindNameTask, limit)
			}
			tasks, err := listAll(cmd.Context(), a, limit, (*client.Client).ListTasks)
			if err != nil {
				return err
			}
			return a.emit(newItemList(tasks), func(wide bool) [][]string { return taskRows(tasks, wide, a.now()) })
		},
	}
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, watchFlagHelp)
	return cmd
}

func (a *app) taskGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a task",
		Args:  exactArgs(1, "a task id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t *messages.Task
			err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				t, err = c.GetTask(ctx, args[0])
				return err
			})
			if err != nil {
				return err
			}
			return a.printTask(t)
		},
	}
}

func (a *app) taskWaitCommand() *cobra.Command {
	var budget time.Duration
	cmd := &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for a task to finish",
		Long: `Wait for a task to finish, reporting its progress on stderr, then print it.
Exits 0 if it succeeded and 1 if it failed, was cancelled or is still going
when --timeout runs out. Here --timeout is the whole wait, not one request.`,
		Args: exactArgs(1, "a task id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if budget <= 0 {
				return usageError(fmt.Errorf("--timeout must be positive, got %s", budget))
			}
			t, err := a.waitTask(cmd.Context(), args[0], budget)
			if err != nil {
				return err
			}
			if err := a.printTask(t); err != nil {
				return err
			}
			return taskOutcome(t)
		},
	}
	// This shadows the global per-request --timeout on purpose: a long poll
	// is bounded by its own rounds, and "how long to wait" is what a user of
	// "task wait --timeout" means.
	cmd.Flags().DurationVar(&budget, "timeout", defaultWaitTimeout, "how long to wait in total")
	return cmd
}

func (a *app) taskCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a task that has not started running",
		Args:  exactArgs(1, "a task id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t *messages.Task
			err := a.write(cmd.Context(), a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
				t, err = c.CancelTask(ctx, args[0], opt)
				return err
			})
			if err != nil {
				return err
			}
			return a.printTask(t)
		},
	}
}

// printTask prints one task in the -o format.
func (a *app) printTask(t *messages.Task) error {
	return a.emit(t, func(wide bool) [][]string { return taskRows([]*messages.Task{t}, wide, a.now()) })
}
