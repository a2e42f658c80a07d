package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// manifestHelp is the part of create -f and delete -f help that describes files.
const manifestHelp = `Each -f names a YAML file ("-" reads stdin) of one or more documents separated
by "---". A document is:

  apiVersion: otherix.dev/v1  # optional; if given it must be this
  kind: VM                    # case-insensitive
  metadata:
    name: web-1
  spec:
    image: {url: https://img.example/debian-12.qcow2, sha256: ""}
    cpus: 2
    memory_mib: 2048
    disk_gib: 20
    arch: amd64               # or arm64
    node: rack1-n3            # optional: pin to a node
    user_data: |
      #cloud-config
    networks: [{network: backend, ip: 10.0.0.10}]
    power_state: running      # or stopped

Fields are checked strictly: an unknown field is an error naming it. Every
document is checked before anything is sent; empty documents are skipped.
A network is:

  kind: Network
  metadata:
    name: backend
  spec:
    cidr: 10.0.0.0/24
    type: overlay             # or local
    egress: false
    mtu: 1390                 # optional: derived from the cluster's settings

A storage pool (admin) and a volume are:

  kind: StoragePool
  metadata:
    name: fast
  spec:
    driver: dir               # or btrfs
    path: /srv/otherix/fast
    shared: false
    nodes: [n1, n2]           # or all_nodes: true
  ---
  kind: Volume
  metadata:
    name: data
  spec:
    pool: fast                # optional: the cluster's default pool
    size: 20Gi                # or size_bytes
    node: n1                  # optional

(A top-level "name:" instead of metadata.name and the
apiVersion otherix.io/v1 of earlier releases are still read.)`

// outcome is the result of one resource of a manifest.
type outcome struct {
	res resource
	acc *client.Accepted
	// result is what -o json|yaml prints for the resource: the API's
	// answer (an Accepted for a VM, the network for a created network).
	result any
	err    error
}

// deletedResource reports a synchronous delete (a network) for -o json|yaml.
type deletedResource struct {
	Resource string `json:"resource"`
	Deleted  bool   `json:"deleted"`
}

func (a *app) createCommand() *cobra.Command {
	var files []string
	var w waitFlags
	cmd := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create the resources in manifest files",
		Long: "Create the resources in manifest files, one request each. A resource that\n" +
			"fails (a name already taken, say) is reported and the rest still go; the\n" +
			"exit status is 1 if any failed. -o json|yaml prints {\"items\":[…]} of the\n" +
			"API's answers ({\"task\",\"vm\"} for a VM, the network for a network).\n\n" + manifestHelp,
		Example: `  otherix create -f web.yaml --wait
  cat vms.yaml | otherix create -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.applyManifests(cmd, files, w, true, func(ctx context.Context, c *client.Client, r resource, opt client.CallOption) (any, error) {
				if a.dryRun {
					var d *messages.DryRunResult
					var err error
					switch r.kind {
					case kindNetwork:
						d, err = c.DryRunCreateNetwork(ctx, r.network)
					case kindVM:
						d, err = c.DryRunCreateVM(ctx, messages.CreateVMRequest{Name: r.name, Spec: r.spec})
					default:
						return nil, dryRunUnsupported(r)
					}
					if err != nil {
						return nil, alreadyExists(ctx, c, r, err)
					}
					return d, nil
				}
				var v any
				var err error
				switch r.kind {
				case kindNetwork:
					v, err = c.CreateNetwork(ctx, r.network, opt)
				case kindStoragePool:
					v, err = c.CreatePool(ctx, r.pool, opt)
				case kindVolume:
					v, err = c.CreateVolume(ctx, r.volume, opt)
				default:
					v, err = c.CreateVM(ctx, messages.CreateVMRequest{Name: r.name, Spec: r.spec}, opt)
				}
				return v, alreadyExists(ctx, c, r, err)
			})
		},
	}
	addManifestFlags(cmd, &files, &w)
	a.addDryRunFlag(cmd.Flags())
	return cmd
}

func (a *app) deleteCommand() *cobra.Command {
	var files []string
	var w waitFlags
	var force, ignoreNotFound bool
	cmd := &cobra.Command{
		Use:   "delete (-f FILE | KIND NAME)",
		Short: "Delete a resource by kind and name, or the resources named in manifest files",
		Long: "Delete one resource by kind and name (\"otherix delete vm web-1\"), or the\n" +
			"resources named in manifest files, by kind and name; their specs are not\n" +
			"compared. A resource of a manifest that fails is reported and the rest still\n" +
			"go; the exit status is 1 if any failed.\n\n" + kindsHelp + "\n\n" + manifestHelp,
		Example: `  otherix delete vm web-1 --wait
  otherix delete node rack1-n3 --force
  otherix delete -f web.yaml --ignore-not-found`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && len(files) == 0 {
				return usageError(errors.New("give -f FILE or KIND NAME"))
			}
			if len(args) > 0 {
				if len(files) > 0 {
					return usageError(errors.New("give either -f FILE or KIND NAME, not both"))
				}
				kind, name, err := kindArgs(args, false)
				if err != nil {
					return err
				}
				if err := w.check(); err != nil {
					return err
				}
				if a.dryRun {
					err = a.dryRunDeleteKind(cmd.Context(), kind, name, force, w)
				} else {
					err = a.deleteKind(cmd.Context(), kind, name, force, w)
				}
				if ignoreNotFound && client.ErrorCode(err) == messages.ErrNotFound.Code {
					fmt.Fprintf(a.stderr, "%s/%s not found; nothing to delete\n", kind, name)
					return nil
				}
				return err
			}
			return a.applyManifests(cmd, files, w, false, func(ctx context.Context, c *client.Client, r resource, opt client.CallOption) (any, error) {
				var v any
				var err error
				switch {
				case a.dryRun && r.kind == kindNetwork:
					v, err = c.DryRunDeleteNetwork(ctx, r.name)
				case a.dryRun && r.kind == kindVM:
					v, err = c.DryRunDeleteVM(ctx, r.name, force)
				case a.dryRun:
					err = dryRunUnsupported(r)
				case r.kind == kindNetwork || r.kind == kindStoragePool || r.kind == kindVolume:
					del := c.DeleteNetwork
					if r.kind == kindStoragePool {
						del = c.DeletePool
					} else if r.kind == kindVolume {
						del = c.DeleteVolume
					}
					if err = del(ctx, r.name, opt); err == nil {
						v = deletedResource{Resource: r.ref(), Deleted: true}
					}
				default:
					var acc *client.Accepted
					if acc, err = c.DeleteVM(ctx, r.name, force, opt); err == nil && acc != nil {
						v = acc
					}
				}
				if ignoreNotFound && client.ErrorCode(err) == messages.ErrNotFound.Code {
					fmt.Fprintf(a.stderr, "%s not found; nothing to delete\n", r.ref())
					return nil, nil
				}
				return v, err
			})
		},
	}
	addManifestFlags(cmd, &files, &w)
	cmd.Flags().BoolVar(&force, "force", false, "delete even if a VM runs or its node cannot confirm; a node even with VMs on it")
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "treat a resource that does not exist as deleted")
	a.addDryRunFlag(cmd.Flags())
	return cmd
}

// codeAlreadyExists is what create -f reports for a resource that exists.
const codeAlreadyExists = "already_exists"

// alreadyExists turns a refused create of a resource that already exists
// into already_exists, naming it. Re-running create -f is common, and the
// API's refusal may name whichever of the resource's guards tripped first
// (its cidr overlaps, its address is in use) rather than the name.
func alreadyExists(ctx context.Context, c *client.Client, r resource, err error) error {
	var api *client.APIError
	if !errors.As(err, &api) || api.Status == http.StatusUnauthorized || api.Status == http.StatusForbidden {
		return err
	}
	var gerr error
	switch r.kind {
	case kindNetwork:
		_, gerr = c.GetNetwork(ctx, r.name)
	case kindStoragePool:
		_, gerr = c.GetPool(ctx, r.name)
	case kindVolume:
		_, gerr = c.GetVolume(ctx, r.name)
	default:
		_, gerr = c.GetVM(ctx, r.name)
	}
	if gerr != nil {
		return err
	}
	return &client.APIError{Status: http.StatusConflict, Code: codeAlreadyExists, RequestID: api.RequestID,
		Message: fmt.Sprintf("%s already exists (create -f makes new resources only; apply -f updates existing ones)", r.ref())}
}

func addManifestFlags(cmd *cobra.Command, files *[]string, w *waitFlags) {
	cmd.Flags().StringArrayVarP(files, "filename", "f", nil, "manifest file, - for stdin (repeatable)")
	addWaitFlags(cmd.Flags(), w)
}

// sendFunc sends one resource's write and returns the API's answer: a
// *client.Accepted (VMs), a *messages.Network (a created network) or a
// deletedResource; nil with no error means there was nothing to do.
type sendFunc func(context.Context, *client.Client, resource, client.CallOption) (any, error)

// applyManifests loads and checks every document, then sends each, then
// waits for the tasks if asked to. create says which verb this is.
func (a *app) applyManifests(cmd *cobra.Command, files []string, w waitFlags, create bool, send sendFunc) error {
	if err := w.check(); err != nil {
		return err
	}
	if len(files) == 0 {
		return usageError(errors.New("-f FILE is required"))
	}
	res, err := loadManifests(files, cmd.InOrStdin(), create)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if err := a.startDryRun(ctx, w); err != nil {
		return err
	}
	outs := a.sendAll(ctx, res, create, send)
	if err := a.printAccepted(outs); err != nil {
		return err
	}
	if w.wait {
		a.waitAll(ctx, outs, w)
	}
	return summarize(outs)
}

// sendAll sends every resource in order. It goes on past an API error (a
// conflict on one name says nothing of the next) and stops at a transport
// failure, which would only repeat.
func (a *app) sendAll(ctx context.Context, res []resource, create bool, send sendFunc) []*outcome {
	outs := make([]*outcome, 0, len(res))
	var stop error
	for _, r := range res {
		o := &outcome{res: r}
		outs = append(outs, o)
		if stop != nil {
			o.err = codedf("not_sent", "not sent: %s", errorLine(stop))
			continue
		}
		o.err = a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
			o.result, err = send(ctx, c, r, opt)
			return err
		})
		if o.err != nil {
			fmt.Fprintf(a.stderr, "%s: %s\n", r.ref(), errorLine(o.err))
			if client.ErrorCode(o.err) == "" {
				stop = o.err
			}
			continue
		}
		switch v := o.result.(type) {
		case *messages.DryRunResult:
			if a.tabular() {
				fmt.Fprintln(a.stdout, dryRunLine(r.ref(), v))
			}
		case *client.Accepted:
			o.acc = v
			if v != nil && v.Task != nil && a.tabular() {
				verb := "deletion requested"
				if create {
					verb = "created"
				}
				fmt.Fprintf(a.stdout, "%s %s (task %s)\n", r.ref(), verb, v.Task.ID)
			}
		case *messages.Network:
			if a.tabular() {
				fmt.Fprintf(a.stdout, "%s created (%s, %s)\n", r.ref(), v.CIDR, v.Type)
			}
		case *messages.StoragePool:
			if a.tabular() {
				fmt.Fprintf(a.stdout, "%s created (%s at %s)\n", r.ref(), v.Spec.Driver, v.Spec.Path)
			}
		case *messages.Volume:
			if a.tabular() {
				fmt.Fprintf(a.stdout, "%s created (%s in pool %s, %s)\n", r.ref(), sizeText(v.Spec.SizeBytes), v.Spec.Pool, v.Status.Phase)
			}
		case deletedResource:
			if a.tabular() {
				fmt.Fprintf(a.stdout, "%s deleted\n", r.ref())
			}
		}
	}
	return outs
}

// printAccepted prints the API's answers for -o json|yaml; tables printed a
// line per resource as it went.
func (a *app) printAccepted(outs []*outcome) error {
	if a.tabular() {
		return nil
	}
	var items []any
	for _, o := range outs {
		if o.result != nil {
			items = append(items, o.result)
		}
	}
	return a.emit(newItemList(items), nil)
}

// waitAll follows each accepted task in turn, all within one --wait-timeout.
// The tasks run concurrently on the server, so waiting in order costs no
// more than the slowest.
func (a *app) waitAll(ctx context.Context, outs []*outcome, w waitFlags) {
	deadline := time.Now().Add(w.timeout)
	for _, o := range outs {
		if o.err != nil || o.acc == nil || o.acc.Task == nil {
			continue
		}
		id := o.acc.Task.ID
		fmt.Fprintf(a.stderr, "waiting for %s: task %s…\n", o.res.ref(), id)
		var err error
		if left := time.Until(deadline); left > 0 {
			var t *messages.Task
			if t, err = a.waitTask(ctx, id, left); err == nil {
				err = taskOutcome(t)
			}
		} else {
			err = codedf(codeWaitTimeout, "--wait-timeout %s ran out before task %s was followed; follow it with: otherix task wait %s", w.timeout, id, id)
		}
		if err != nil {
			o.err = err
			fmt.Fprintf(a.stderr, "%s: %s\n", o.res.ref(), errorLine(err))
		}
	}
}

// summarize is the command's result: nil when every resource succeeded,
// else one error whose code is the failures' code when they share one.
func summarize(outs []*outcome) error {
	var codes []string
	failed := 0
	for _, o := range outs {
		if o.err != nil {
			failed++
			codes = append(codes, errorCode(o.err))
		}
	}
	if failed == 0 {
		return nil
	}
	slices.Sort(codes)
	code := codePartial
	if codes = slices.Compact(codes); len(codes) == 1 && codes[0] != "" {
		code = codes[0]
	}
	return codedf(code, "%d of %d resources failed", failed, len(outs))
}

// tabular reports whether -o asks for text rather than JSON or YAML.
func (a *app) tabular() bool { return a.output == outputTable || a.output == outputWide }

// check refuses a --wait-timeout that could not wait at all, before any
// write is sent.
func (w waitFlags) check() error {
	if w.wait && w.timeout <= 0 {
		return usageError(fmt.Errorf("--wait-timeout must be positive, got %s", w.timeout))
	}
	return nil
}
