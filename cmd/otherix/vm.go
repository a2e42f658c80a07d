package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

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
	cmd.AddCommand(a.vmCreateCommand(), a.vmListCommand(), a.vmGetCommand(), a.vmDescribeCommand(),
		a.vmDeleteCommand(),
		a.vmTaskCommand("start", "Start a stopped VM", (*client.Client).StartVM),
		a.vmTaskCommand("stop", "Stop a VM gracefully (ACPI power button)", (*client.Client).StopVM))
	return cmd
}

// vmCreateFlags are the flags of "vm create".
type vmCreateFlags struct {
	image, sha256, userData, key string
	cpus, memory, disk           int
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
  otherix vm create db-1 --image https://img.example/d.qcow2 --cpus 4 --memory 8192 --disk 100 \
      --network backend:10.0.0.10 --user-data cloud-init.yaml --wait`,
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
	f.IntVar(&fl.cpus, "cpus", 0, fmt.Sprintf("number of vCPUs (server default %d)", d.CPUs))
	f.IntVar(&fl.memory, "memory", 0, fmt.Sprintf("memory in MiB (server default %d)", d.MemoryMiB))
	f.IntVar(&fl.disk, "disk", 0, fmt.Sprintf("disk size in GiB (server default %d)", d.DiskGiB))
	f.StringVar(&fl.userData, "user-data", "", "cloud-init user-data file (- reads stdin)")
	f.StringArrayVar(&fl.networks, "network", nil, "attach to network NAME, optionally at a static IPv4 address (NAME[:IP]; repeatable)")
	f.BoolVar(&fl.stopped, "stopped", false, "create the VM without starting it")
	f.StringVar(&fl.key, "idempotency-key", "", "Idempotency-Key to send (default: a random one)")
	addWaitFlags(f, &fl.wait)
	return cmd
}

// request builds and checks the create request, so an obvious mistake is
// reported before anything is sent.
func (fl *vmCreateFlags) request(name string, stdin io.Reader) (messages.CreateVMRequest, error) {
	if fl.image == "" {
		return messages.CreateVMRequest{}, usageError(errors.New("--image is required"))
	}
	req := messages.CreateVMRequest{Name: name, Spec: messages.VMSpec{
		Image: messages.ImageSource{URL: fl.image, SHA256: fl.sha256},
		CPUs:  fl.cpus, MemoryMiB: fl.memory, DiskGiB: fl.disk,
	}}
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
		return &cliError{code: me.Code, msg: me.Message}
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
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List VMs",
		Long: `List every VM, following the API's pages. -o json|yaml prints {"items":[…]}
with every VM exactly as the API returns it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			vms, err := listAll(cmd.Context(), a, limit, (*client.Client).ListVMs)
			if err != nil {
				return err
			}
			return a.emit(newItemList(vms), func(wide bool) [][]string { return vmRows(vms, wide, a.now()) })
		},
	}
	cmd.Flags().IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	return cmd
}

// lister is an SDK list method: one page and the next page's cursor.
type lister[T any] func(*client.Client, context.Context, client.ListOptions, ...client.CallOption) ([]T, string, error)

// listAll follows next_cursor until the last page.
func listAll[T any](ctx context.Context, a *app, limit int, list lister[T]) ([]T, error) {
	if limit < 1 || limit > 200 {
		return nil, usageError(fmt.Errorf("--limit must be between 1 and 200, got %d", limit))
	}
	var all []T
	seen := map[string]bool{}
	cursor := ""
	for {
		var page []T
		err := a.call(ctx, func(ctx context.Context, c *client.Client) (err error) {
			page, cursor, err = list(c, ctx, client.ListOptions{Limit: limit, Cursor: cursor})
			return err
		})
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if cursor == "" {
			return all, nil
		}
		if seen[cursor] {
			// A server that hands back a cursor twice would loop forever.
			return nil, codedf("bad_cursor", "the API returned cursor %q twice", cursor)
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

// addWaitFlags adds --wait and --wait-timeout.
func addWaitFlags(f *pflag.FlagSet, w *waitFlags) {
	f.BoolVar(&w.wait, "wait", false, "wait for the task to finish; exit 1 if it fails")
	f.DurationVar(&w.timeout, "wait-timeout", defaultWaitTimeout, "how long --wait waits")
}
