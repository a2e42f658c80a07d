package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// watchFlagHelp is the help of -w on every list.
const watchFlagHelp = "after the list, print one line per change until interrupted (resumes by itself after a dropped connection)"

// watchedKind is what -w needs of one kind: how to list it with the list's
// revision, the watch type, and how a changed resource becomes a table row.
type watchedKind struct {
	// typ is the watch stream type (vms, nodes, tasks, networks).
	typ string
	// list lists every page and returns the table, the JSON document and
	// the revision of the first page.
	list func(ctx context.Context, wide bool) (table [][]string, doc any, rev int64, err error)
	// row renders one changed resource (without the header).
	row func(data json.RawMessage, wide bool) ([]string, error)
}

// watchedKinds lists the kinds -w follows, by their singular name.
func (a *app) watchedKinds(limit int) map[string]watchedKind {
	return map[string]watchedKind{
		kindNameVM: {typ: "vms",
			list: func(ctx context.Context, wide bool) ([][]string, any, int64, error) {
				vms, rev, err := listAllAt(ctx, a, limit, (*client.Client).ListVMs)
				var owners map[string]string
				if err == nil && wide {
					owners = a.ownerEmails(ctx, vms)
				}
				return vmRowsWithOwners(vms, wide, a.now(), owners), newItemList(vms), rev, err
			},
			row: rowOf(func(vm *messages.VM, wide bool) [][]string { return vmRows([]*messages.VM{vm}, wide, a.now()) })},
		kindNameNode: {typ: "nodes",
			list: func(ctx context.Context, wide bool) ([][]string, any, int64, error) {
				nodes, rev, err := listAllAt(ctx, a, limit, func(c *client.Client, ctx context.Context, o client.ListOptions, opts ...client.CallOption) ([]*messages.Node, string, error) {
					return c.ListNodes(ctx, o, opts...)
				})
				return nodeRows(nodes, wide, a.now()), newItemList(nodes), rev, err
			},
			row: rowOf(func(n *messages.Node, wide bool) [][]string { return nodeRows([]*messages.Node{n}, wide, a.now()) })},
		kindNameTask: {typ: "tasks",
			list: func(ctx context.Context, wide bool) ([][]string, any, int64, error) {
				tasks, rev, err := listAllAt(ctx, a, limit, (*client.Client).ListTasks)
				return taskRows(tasks, wide, a.now()), newItemList(tasks), rev, err
			},
			row: rowOf(func(t *messages.Task, wide bool) [][]string { return taskRows([]*messages.Task{t}, wide, a.now()) })},
		kindNameNetwork: {typ: "networks",
			list: func(ctx context.Context, wide bool) ([][]string, any, int64, error) {
				nets, rev, err := listAllAt(ctx, a, limit, (*client.Client).ListNetworks)
				return networkRows(nets, wide, a.now()), newItemList(nets), rev, err
			},
			row: rowOf(func(n *messages.Network, wide bool) [][]string {
				return networkRows([]*messages.Network{n}, wide, a.now())
			})},
	}
}

// rowOf decodes a watch event's resource and renders its one table row.
func rowOf[T any](rows func(*T, bool) [][]string) func(json.RawMessage, bool) ([]string, error) {
	return func(data json.RawMessage, wide bool) ([]string, error) {
		v := new(T)
		if err := json.Unmarshal(data, v); err != nil {
			return nil, fmt.Errorf("decode watch event: %w", err)
		}
		return rows(v, wide)[1], nil
	}
}

// listAndWatch prints the list of kind, then one line per change, like
// kubectl get -w: the row of the changed resource after its event type. A
// stream the server ends with resync, or a revision it no longer keeps, is
// answered by listing again. It returns when ctx ends (Ctrl-C).
func (a *app) listAndWatch(ctx context.Context, kind string, limit int) error {
	k, ok := a.watchedKinds(limit)[kind]
	if !ok {
		return usageError(fmt.Errorf("-w follows vms, nodes, tasks and networks, not %ss", kind))
	}
	if a.output == outputYAML {
		return usageError(errors.New("-w prints a table or JSON lines: use -o table, wide or json"))
	}
	wide := a.output == outputWide
	for {
		table, doc, rev, err := k.list(ctx, wide)
		if err != nil {
			return err
		}
		if a.output == outputJSON {
			err = writeJSON(a.stdout, doc)
		} else {
			err = writeTable(a.stdout, table)
		}
		if err != nil {
			return err
		}
		c, err := a.client()
		if err != nil {
			return err
		}
		err = c.WatchEach(ctx, client.WatchOptions{Types: []string{k.typ}, Since: rev}, func(e client.WatchEvent) error {
			return a.printChange(k, e, wide)
		})
		if ctx.Err() != nil {
			return nil // interrupted: the normal way out
		}
		var se *client.StreamError
		if errors.As(err, &se) && se.Code == "resync" || client.ErrorCode(err) == "revision_compacted" {
			fmt.Fprintln(a.stderr, "note: the watch fell behind the server; listing again")
			continue
		}
		return a.explain(ctx, err)
	}
}

// printChange prints one event: a table row behind its event type, or with
// -o json one line {"event","revision","object"}. Bookmarks print nothing.
func (a *app) printChange(k watchedKind, e client.WatchEvent, wide bool) error {
	if e.Type == client.EventBookmark {
		return nil
	}
	if a.output == outputJSON {
		b, err := json.Marshal(struct {
			Event    string          `json:"event"`
			Revision int64           `json:"revision"`
			Object   json.RawMessage `json:"object"`
		}{e.Type, e.ID, e.Data})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	row, err := k.row(e.Data, wide)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(a.stdout, strings.ToUpper(e.Type)+"   "+strings.Join(row, "   "))
	return err
}
