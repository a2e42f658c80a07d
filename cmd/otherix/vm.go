package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// defaultPageSize is how many items a list asks for per page.
const defaultPageSize = 100

// vmCommand is "otherix vm …".
func (a *app) vmCommand() *cobra.Command {
	cmd := groupCommand("vm", "Create and manage virtual machines", "vms")
	cmd.AddCommand(a.vmCreateCommand(), a.vmListCommand(), a.vmGetCommand(), a.vmDescribeCommand(), a.vmTopCommand(),
		a.vmDeleteCommand(),
		a.vmTaskCommand("start", "Start a stopped VM", (*client.Client).StartVM),
		a.vmStopCommand(),
		a.vmTaskCommand("poweroff", "Power a VM off at once (hard stop; the guest cannot shut down)", (*client.Client).PoweroffVM),
		a.vmRebootCommand(),
		a.vmSyncCommand("pause", "Pause a running VM's vCPUs", (*client.Client).PauseVM),
		a.vmSyncCommand("resume", "Resume a paused VM", (*client.Client).ResumeVM),
		a.vmLogsCommand(), a.vmConsoleCommand())
	return cmd
}

// vmCreateFlags are the flags of "vm create".
type vmCreateFlags struct {
	image, sha256, userData, key string
	pullPolicy                   string
	node, arch                   string
	cpus                         int
	memory, disk                 string
	networks                     []string
	stopped                      bool
	wait                         waitFlags
}

func (a *app) vmCreateCommand() *cobra.Command {
	var fl vmCreateFlags
	var d messages.VMSpec
	d.Defaults()
	cmd := &cobra.Command{
		Use:   "create NAME --image URL",
		Short: "Create a VM",
		Long: `Create a VM. The API accepts the request at once and creates the VM in a task;
the task is printed (-o json prints the API's {"task":…,"vm":…} answer).
With --wait the command follows the task, reporting progress on stderr, and
exits 1 if the task fails or is cancelled.

Every create carries an Idempotency-Key (random unless --idempotency-key is
given), so a request whose answer was lost is retried without a second VM.`,
		Example: `  otherix vm create web-1 --image https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2
  otherix vm create db-1 --image https://img.example/d.qcow2 --cpus 4 --memory 8Gi --disk 100Gi \
      --network backend:10.0.0.10 --user-data cloud-init.yaml --wait
  otherix vm create arm-1 --image https://img.example/arm.qcow2 --arch arm64 --node rack2-n7 --stopped`,
		Args: exactArgs(1, "a VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := fl.wait.check(); err != nil {
				return err
			}
			req, err := fl.request(args[0], cmd.InOrStdin())
			if err != nil {
				return err
			}
			return a.createVM(cmd.Context(), req, a.keyOr(fl.key), fl.wait)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.image, "image", "", "base disk image URL (http or https; required)")
	f.StringVar(&fl.sha256, "sha256", "", "expected SHA-256 of the image, in hex")
	f.StringVar(&fl.pullPolicy, "pull-policy", "", "when the node asks the image's origin: IfNotPresent (default: use its cached copy), Always (revalidate with ETag/Last-Modified) or Never (fail with image_not_present unless cached)")
	f.IntVar(&fl.cpus, "cpus", 0, fmt.Sprintf("number of vCPUs (server default %d)", d.CPUs))
	f.StringVar(&fl.memory, "memory", "", fmt.Sprintf("memory: 512Mi, 2Gi, 2G (powers of 1024) or a bare number of MiB (server default %s)", mib(d.MemoryMiB)))
	f.StringVar(&fl.disk, "disk", "", fmt.Sprintf("disk size: 20Gi, 1T or a bare number of GiB; whole GiB only (server default %s)", gib(d.DiskGiB)))
	f.StringVar(&fl.node, "node", "", "place the VM on this node (default: the scheduler chooses)")
	f.StringVar(&fl.arch, "arch", "", "guest architecture: amd64 or arm64 (server default amd64)")
	f.StringVar(&fl.userData, "user-data", "", "cloud-init user-data file (- reads stdin)")
	f.StringArrayVar(&fl.networks, "network", nil, "attach to network NAME, optionally at a static IPv4 address (NAME[:IP]; repeatable)")
	f.BoolVar(&fl.stopped, "stopped", false, "create the VM without starting it")
	f.StringVar(&fl.key, "idempotency-key", "", "Idempotency-Key to send (default: a random one)")
	addWaitFlags(f, &fl.wait)
	a.addDryRunFlag(f)
	return cmd
}

// request builds and checks the create request, so an obvious mistake is
// reported before anything is sent.
func (fl *vmCreateFlags) request(name string, stdin io.Reader) (messages.CreateVMRequest, error) {
	if fl.image == "" {
		return messages.CreateVMRequest{}, usageError(errors.New("--image is required"))
	}
	req := messages.CreateVMRequest{Name: name, Spec: messages.VMSpec{
		Image: messages.ImageSource{URL: fl.image, SHA256: fl.sha256, PullPolicy: fl.pullPolicy},
		CPUs:  fl.cpus, Node: fl.node, Arch: fl.arch,
	}}
	switch fl.pullPolicy {
	case "", messages.PullIfNotPresent, messages.PullAlways, messages.PullNever:
	default:
		return req, usageError(fmt.Errorf("--pull-policy %q: want %s, %s or %s", fl.pullPolicy, messages.PullIfNotPresent, messages.PullAlways, messages.PullNever))
	}
	if fl.memory != "" {
		n, err := parseMemoryMiB(fl.memory)
		if err != nil {
			return req, usageError(fmt.Errorf("--memory: %w", err))
		}
		req.Spec.MemoryMiB = n
	}
	if fl.disk != "" {
		n, err := parseDiskGiB(fl.disk)
		if err != nil {
			return req, usageError(fmt.Errorf("--disk: %w", err))
		}
		req.Spec.DiskGiB = n
	}
	if fl.arch != "" && fl.arch != messages.ArchAMD64 && fl.arch != messages.ArchARM64 {
		return req, usageError(fmt.Errorf("--arch %q: want %s or %s", fl.arch, messages.ArchAMD64, messages.ArchARM64))
	}
	if fl.stopped {
		req.Spec.PowerState = messages.PowerStopped
	}
	for _, n := range fl.networks {
		nic, err := parseNetwork(n)
		if err != nil {
			return req, usageError(err)
		}
		req.Spec.Networks = append(req.Spec.Networks, nic)
	}
	if fl.userData != "" {
		b, err := readFileOrStdin(fl.userData, stdin)
		if err != nil {
			return req, usageError(fmt.Errorf("--user-data: %w", err))
		}
		req.Spec.UserData = string(b)
	}
	return req, checkCreate(req)
}

// checkCreate applies the API's own validation locally. The spec is checked
// on a defaulted copy; the request keeps its zeros so the server's defaults
// apply.
func checkCreate(req messages.CreateVMRequest) error {
	spec := req.Spec
	spec.Defaults()
	err := messages.ValidateName("name", req.Name)
	if err == nil {
		err = spec.Validate()
	}
	var me *messages.Error
	if errors.As(err, &me) {
		// The values came from the command line: a usage error, under the
		// code the API would have answered.
		return &cliError{code: me.Code, msg: me.Message, usage: true}
	}
	return err
}

// parseNetwork reads a --network value: NAME or NAME:IP.
func parseNetwork(s string) (messages.NICSpec, error) {
	name, ip, hasIP := strings.Cut(s, ":")
	if name == "" {
		return messages.NICSpec{}, fmt.Errorf("--network %q: want NAME or NAME:IP", s)
	}
	if !hasIP {
		return messages.NICSpec{Network: name}, nil
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is4() {
		return messages.NICSpec{}, fmt.Errorf("--network %q: %q is not an IPv4 address", s, ip)
	}
	return messages.NICSpec{Network: name, IP: addr.String()}, nil
}

// readFileOrStdin reads path, or stdin when path is "-".
func readFileOrStdin(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(path)
}

// createVM sends one create and prints the accepted task.
func (a *app) createVM(ctx context.Context, req messages.CreateVMRequest, key string, w waitFlags) error {
	if a.dryRun {
		if err := a.startDryRun(ctx, w); err != nil {
			return err
		}
		var r *messages.DryRunResult
		if err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
			r, err = c.DryRunCreateVM(ctx, req)
			return err
		}); err != nil {
			return err
		}
		return a.emitDryRun("vm/"+req.Name, r)
	}
	var acc *client.Accepted
	err := a.write(ctx, key, func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
		acc, err = c.CreateVM(ctx, req, opt)
		return err
	})
	if err != nil {
		return err
	}
	return a.accepted(ctx, acc, w)
}

// accepted prints an accepted write and follows its task if asked to.
func (a *app) accepted(ctx context.Context, acc *client.Accepted, w waitFlags) error {
	if acc.Replayed {
		fmt.Fprintln(a.stderr, "note: the server had already accepted this request; this is its first answer")
	}
	if err := a.emit(acc, func(bool) [][]string { return acceptedRows([]*client.Accepted{acc}) }); err != nil {
		return err
	}
	return a.waitAccepted(ctx, acc, w)
}

func (a *app) vmListCommand() *cobra.Command {
	var limit int
	var watch bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List VMs",
		Long: `List every VM, following the API's pages. -o json|yaml prints {"items":[…]}
with every VM exactly as the API returns it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch {
				return a.listAndWatch(cmd.Context(), kindNameVM, limit)
			}
			vms, err := listAll(cmd.Context(), a, limit, (*client.Client).ListVMs)
			if err != nil {
				return err
			}
			return a.emit(newItemList(vms), func(wide bool) [][]string {
				var owners map[string]string
				if wide {
					owners = a.ownerEmails(cmd.Context(), vms)
				}
				return vmRowsWithOwners(vms, wide, a.now(), owners)
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, watchFlagHelp)
	return cmd
}

// lister is an SDK list method: one page and the next page's cursor.
type lister[T any] func(*client.Client, context.Context, client.ListOptions, ...client.CallOption) ([]T, string, error)

// listAll follows next_cursor until the last page.
func listAll[T any](ctx context.Context, a *app, limit int, list lister[T]) ([]T, error) {
	all, _, err := listAllAt(ctx, a, limit, list)
	return all, err
}

// listAllAt is listAll that also returns the first page's meta.revision,
// where a watch continues from (a later page read at a later revision may
// show a change the watch then shows again, never miss one).
func listAllAt[T any](ctx context.Context, a *app, limit int, list lister[T]) ([]T, int64, error) {
	if limit < 1 || limit > 200 {
		return nil, 0, usageError(fmt.Errorf("--limit must be between 1 and 200, got %d", limit))
	}
	var first, rev int64
	var all []T
	seen := map[string]bool{}
	cursor := ""
	for {
		var page []T
		err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
			page, cursor, err = list(c, ctx, client.ListOptions{Limit: limit, Cursor: cursor, Revision: &rev})
			return err
		})
		if err != nil {
			return nil, 0, err
		}
		if first == 0 {
			first = rev
		}
		all = append(all, page...)
		if cursor == "" {
			return all, first, nil
		}
		if seen[cursor] {
			// A server that hands back a cursor twice would loop forever.
			return nil, 0, codedf("bad_cursor", "the API returned cursor %q twice", cursor)
		}
		seen[cursor] = true
	}
}

func (a *app) vmGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME|ID",
		Short: "Show a VM",
		Long:  "Show a VM as a table row, or -o json|yaml exactly as the API returns it.",
		Args:  exactArgs(1, "a VM name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := a.getVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.emit(vm, func(wide bool) [][]string { return vmRows([]*messages.VM{vm}, wide, a.now()) })
		},
	}
}

// getVM reads one VM by name or id.
func (a *app) getVM(ctx context.Context, ref string) (*messages.VM, error) {
	var vm *messages.VM
	err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
		vm, err = c.GetVM(ctx, ref)
		return err
	})
	return vm, err
}

func (a *app) vmDeleteCommand() *cobra.Command {
	var force bool
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "delete NAME|ID",
		Short: "Delete a VM and its disk",
		Long: `Delete a VM and its disk. A running VM must be stopped first, or deleted with
--force, which also deletes when its node cannot confirm.`,
		Aliases: []string{"rm"},
		Args:    exactArgs(1, "a VM name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.vmTask(cmd.Context(), w, func(ctx context.Context, c *client.Client, opt client.CallOption) (*client.Accepted, error) {
				return c.DeleteVM(ctx, args[0], force, opt)
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even if the VM runs or its node cannot confirm")
	addWaitFlags(cmd.Flags(), &w)
	return cmd
}

// vmTaskCommand is a verb such as "start" that asks for one task on a VM.
func (a *app) vmTaskCommand(verb, short string, fn func(*client.Client, context.Context, string, ...client.CallOption) (*client.Accepted, error)) *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   verb + " NAME|ID",
		Short: short,
		Args:  exactArgs(1, "a VM name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.vmTask(cmd.Context(), w, func(ctx context.Context, c *client.Client, opt client.CallOption) (*client.Accepted, error) {
				return fn(c, ctx, args[0], opt)
			})
		},
	}
	addWaitFlags(cmd.Flags(), &w)
	return cmd
}

// vmTask sends one write that answers with a task and prints the task.
func (a *app) vmTask(ctx context.Context, w waitFlags, fn func(context.Context, *client.Client, client.CallOption) (*client.Accepted, error)) error {
	if err := w.check(); err != nil {
		return err
	}
	var acc *client.Accepted
	err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
		acc, err = fn(ctx, c, opt)
		return err
	})
	if err != nil {
		return err
	}
	return a.accepted(ctx, acc, w)
}

// gracePeriodFlag is --grace-period: how long the guest gets to act on the
// ACPI power button (stop, reboot). It is not the global --timeout, which
// bounds one request.
type gracePeriodFlag struct{ d time.Duration }

func (g *gracePeriodFlag) add(f *pflag.FlagSet) {
	f.DurationVar(&g.d, "grace-period", 0, "how long the guest gets to power off after the ACPI power button (1s to 1h; default: the node's)")
}

// options returns the call option for a given grace period, or nil.
func (g *gracePeriodFlag) options(f *pflag.FlagSet, name string) ([]client.CallOption, error) {
	if !f.Changed(name) {
		return nil, nil
	}
	if g.d < time.Second || g.d > time.Hour || g.d%time.Second != 0 {
		return nil, usageError(fmt.Errorf("--%s must be a whole number of seconds from 1s to 1h, got %s", name, g.d))
	}
	return []client.CallOption{client.WithStopTimeout(g.d)}, nil
}

// vmStopCommand is "vm stop [--grace-period D]".
func (a *app) vmStopCommand() *cobra.Command {
	var w waitFlags
	var grace gracePeriodFlag
	cmd := &cobra.Command{
		Use:   "stop NAME|ID",
		Short: "Stop a VM gracefully (ACPI power button)",
		Long: `Stop a VM gracefully: press its ACPI power button and wait for the guest to
power off. A graceful stop never kills the VM: if the guest has not powered off
within --grace-period (a whole number of seconds from 1s to 1h; the node's
default when not given) the task fails and the VM keeps running; "vm poweroff"
is the hard stop. --timeout is the global limit of one request on every
other command (here its deprecated old spelling still means --grace-period).`,
		Example: `  otherix vm stop web-1 --grace-period 2m --wait`,
		Args:    exactArgs(1, "a VM name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "grace-period"
			if cmd.Flags().Changed("timeout") {
				if cmd.Flags().Changed("grace-period") {
					return usageError(errors.New("give --grace-period only: on vm stop, --timeout is its deprecated old name"))
				}
				name = "timeout"
				fmt.Fprintln(a.stderr, "Flag --timeout of vm stop is deprecated: use --grace-period (--timeout is the global per-request limit on every other command)")
			}
			opts, err := grace.options(cmd.Flags(), name)
			if err != nil {
				return err
			}
			return a.vmTask(cmd.Context(), w, func(ctx context.Context, c *client.Client, opt client.CallOption) (*client.Accepted, error) {
				return c.StopVM(ctx, args[0], append(opts, opt)...)
			})
		},
	}
	grace.add(cmd.Flags())
	// The old spelling shadowed the global per-request --timeout with
	// another meaning. Kept, hidden and deprecated, so scripts keep working
	// while they move to --grace-period.
	cmd.Flags().DurationVar(&grace.d, "timeout", 0, "deprecated: the old name of --grace-period")
	_ = cmd.Flags().MarkHidden("timeout")
	addWaitFlags(cmd.Flags(), &w)
	return cmd
}

// vmRebootCommand is "vm reboot [--force] [--grace-period D]".
func (a *app) vmRebootCommand() *cobra.Command {
	var w waitFlags
	var force bool
	var grace gracePeriodFlag
	cmd := &cobra.Command{
		Use:   "reboot NAME|ID",
		Short: "Reboot a VM (through the guest, or --force to reset it at once)",
		Long: `Reboot a VM. By default through the guest: the ACPI power button, then a
start with the same disks once the guest has powered off; if it has not within
--grace-period the task fails and the VM keeps running. --force resets the VM
at once.`,
		Example: `  otherix vm reboot web-1 --grace-period 30s --wait
  otherix vm reboot web-1 --force`,
		Args: exactArgs(1, "a VM name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := grace.options(cmd.Flags(), "grace-period")
			if err != nil {
				return err
			}
			if force && opts != nil {
				return usageError(errors.New("--grace-period is for a reboot through the guest; --force resets at once"))
			}
			return a.vmTask(cmd.Context(), w, func(ctx context.Context, c *client.Client, opt client.CallOption) (*client.Accepted, error) {
				return c.RebootVM(ctx, args[0], force, append(opts, opt)...)
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "reset the VM at once instead of asking the guest to reboot")
	grace.add(cmd.Flags())
	addWaitFlags(cmd.Flags(), &w)
	return cmd
}

// vmSyncCommand is a fast verb such as "pause" that the API answers at once
// with the VM; it prints the VM.
func (a *app) vmSyncCommand(verb, short string, fn func(*client.Client, context.Context, string, ...client.CallOption) (*messages.VM, error)) *cobra.Command {
	var w waitFlags
	cmd := &cobra.Command{
		Use:   verb + " NAME|ID",
		Short: short,
		Long: short + `. The node does it at once and the VM is printed as the node
now reports it. A VM that is not running is refused (vm_not_running), as is
one whose node cannot be reached now (node_unreachable). --wait is accepted
as on every other verb: the answer already comes once the node has done it.`,
		Args: exactArgs(1, "a VM name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := w.check(); err != nil {
				return err
			}
			var vm *messages.VM
			err := a.write(cmd.Context(), a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
				vm, err = fn(c, ctx, args[0], opt)
				return err
			})
			if err != nil {
				return err
			}
			return a.emit(vm, func(wide bool) [][]string { return vmRows([]*messages.VM{vm}, wide, a.now()) })
		},
	}
	addWaitFlags(cmd.Flags(), &w)
	return cmd
}

// vmLogsCommand is "vm logs [--tail N]".
func (a *app) vmLogsCommand() *cobra.Command {
	var tail int
	var follow, raw bool
	cmd := &cobra.Command{
		Use:   "logs NAME|ID",
		Short: "Print the end of a VM's serial console output",
		Long: `Print the end of a VM's serial console output (boot messages, kernel and
login prompts) as its node keeps it: -o does not apply. --tail N prints the
last N lines of what the node keeps (up to 1 MiB).

The guest writes every byte of this output, so it is printed as plain text:
escape sequences (colours, cursor movement, window titles, clipboard writes,
terminal queries) are removed, \r\n becomes \n, other control characters and
invalid UTF-8 become U+FFFD. This holds whether or not stdout is a terminal,
since a file or pipe is often shown on one later. --raw prints the bytes
unchanged, for a tool that handles them itself.

With -f it attaches a read-only console instead and follows the output until
the VM stops or Ctrl-C. The console starts with a replay of the recent output
(64 KiB), so the log is not fetched separately: nothing is printed twice.
--tail does not apply to -f.`,
		Example: `  otherix vm logs web-1 --tail 20
  otherix vm logs web-1 -f`,
		Args: exactArgs(1, "a VM name or id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("tail") && tail < 1 {
				return usageError(fmt.Errorf("--tail must be a positive number of lines, got %d", tail))
			}
			if follow {
				if cmd.Flags().Changed("tail") {
					return usageError(fmt.Errorf("--tail does not go with -f, which replays the recent output"))
				}
				out := io.Writer(a.stdout)
				var safe *termSafe
				if !raw {
					safe = newTermSafe(a.stdout)
					out = safe
				}
				err := a.console(cmd.Context(), args[0], messages.ConsoleTokenRequest{Mode: messages.ConsoleReadOnly}, false, out)
				if safe != nil {
					if ferr := safe.Flush(); err == nil {
						err = ferr
					}
				}
				return err
			}
			// The API tails in bytes; lines are what a reader counts. Ask
			// for everything the node keeps and cut here.
			var want int64
			if tail > 0 {
				want = maxLogBytes
			}
			var out []byte
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				out, err = c.VMLogs(ctx, args[0], want)
				return err
			}); err != nil {
				return err
			}
			if raw {
				_, err := a.stdout.Write(lastLines(out, tail))
				return err
			}
			safe := newTermSafe(a.stdout)
			if _, err := safe.Write(lastLines(out, tail)); err != nil {
				return err
			}
			return safe.Flush()
		},
	}
	cmd.Flags().IntVar(&tail, "tail", 0, "print only the last N lines (default: the node's last 64 KiB)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the output through a read-only console until the VM stops or Ctrl-C")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the guest's bytes unchanged, escape sequences included")
	return cmd
}

// maxLogBytes is the most one logs request returns.
const maxLogBytes = 1 << 20

// lastLines returns the last n lines of b (all of b when n <= 0). A final
// line without its newline counts as a line.
func lastLines(b []byte, n int) []byte {
	if n <= 0 {
		return b
	}
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

// addWaitFlags adds --wait and --wait-timeout.
func addWaitFlags(f *pflag.FlagSet, w *waitFlags) {
	f.BoolVar(&w.wait, "wait", false, "wait for the task to finish; exit 1 if it fails")
	f.DurationVar(&w.timeout, "wait-timeout", defaultWaitTimeout, "how long --wait waits")
}
