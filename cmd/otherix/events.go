package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// eventsCommand is "otherix events": lifecycle events, as a table or
// JSON, and with -f followed as they happen.
func (a *app) eventsCommand() *cobra.Command {
	var (
		follow bool
		f      client.EventFilter
		limit  int
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List lifecycle events (VM started, stopped, crashed; node unreachable; task failed)",
		Long: `List lifecycle events, oldest first: VMs created, started, stopped (by a user
or by the guest), crashed and deleted; nodes ready, unreachable and gone; tasks
failed. Each was written with the change it records. You see the events of
what you may list: a developer sees their own VMs' and tasks', and nodes'.

-f follows: after the list, each new event is printed as it happens, until
interrupted; a dropped connection is resumed without a gap. -o json prints
{"items":[…]} with every event exactly as the API returns it (with -f, then
one JSON line per new event).`,
		Example: `  otherix events
  otherix events --type vm --since 10m
  otherix events --object web-1 -f`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 200 {
				return usageError(fmt.Errorf("--limit must be between 1 and 200, got %d", limit))
			}
			if f.Type != "" && !messages.ValidEventTypeFilter(f.Type) {
				return usageError(fmt.Errorf("--type %q: want an object kind (%s) or an event type such as vm.started",
					f.Type, strings.Join(messages.EventKinds, ", ")))
			}
			if follow && a.output == outputYAML {
				return usageError(errors.New("-f prints a table or JSON lines: use -o table, wide or json"))
			}
			return a.events(cmd.Context(), f, limit, follow)
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&follow, "follow", "f", false, "after the list, print each new event until interrupted")
	fl.StringVar(&f.Type, "type", "", "only events about this object kind (vm, node, task) or of this type (vm.started)")
	fl.StringVar(&f.Since, "since", "", "only events from this far back (10m, 2h) or since an RFC 3339 time")
	fl.StringVar(&f.Object, "object", "", "only events about the object of this name or id")
	fl.IntVar(&limit, "limit", defaultPageSize, "items per page requested from the API (1-200)")
	return cmd
}

// events lists every page, prints it, and with follow goes on from the
// list's revision on the watch stream, listing again when the stream says
// it fell behind.
func (a *app) events(ctx context.Context, f client.EventFilter, limit int, follow bool) error {
	wide := a.output == outputWide
	for {
		evs, rev, err := listAllAt(ctx, a, limit, func(c *client.Client, ctx context.Context, o client.ListOptions, opts ...client.CallOption) ([]*messages.Event, string, error) {
			return c.ListEvents(ctx, f, o, opts...)
		})
		if err != nil {
			return err
		}
		if err := a.emit(newItemList(evs), func(wide bool) [][]string { return eventRows(evs, wide, a) }); err != nil || !follow {
			return err
		}
		c, err := a.client()
		if err != nil {
			return err
		}
		seen := make(map[string]bool, len(evs))
		for _, e := range evs {
			seen[e.ID] = true
		}
		err = c.WatchEach(ctx, client.WatchOptions{Types: []string{"events"}, Since: rev}, func(we client.WatchEvent) error {
			if we.Type != "added" { // events are only ever added
				return nil
			}
			var e messages.Event
			if err := json.Unmarshal(we.Data, &e); err != nil {
				return fmt.Errorf("decode event: %w", err)
			}
			if seen[e.ID] || !e.MatchesType(f.Type) || f.Object != "" && e.Object.Name != f.Object && e.Object.ID != f.Object {
				return nil
			}
			if a.output == outputJSON {
				_, err := fmt.Fprintf(a.stdout, "%s\n", we.Data)
				return err
			}
			row := eventRows([]*messages.Event{&e}, wide, a)[1]
			_, err := fmt.Fprintln(a.stdout, strings.Join(row, "   "))
			return err
		})
		if ctx.Err() != nil {
			return nil // interrupted: the normal way out
		}
		var se *client.StreamError
		if errors.As(err, &se) && se.Code == "resync" || client.ErrorCode(err) == "revision_compacted" {
			fmt.Fprintln(a.stderr, "note: the stream fell behind the server; listing again")
			continue
		}
		return a.explain(ctx, err)
	}
}

// eventRows is the table of events; wide adds the severity, the object's
// id, the owner and the revision.
func eventRows(evs []*messages.Event, wide bool, a *app) [][]string {
	head := []string{"AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"}
	if wide {
		head = append(head, "SEVERITY", "ID", "OWNER", "REVISION")
	}
	rows := [][]string{head}
	for _, e := range evs {
		r := []string{age(e.Time, a.now()), e.Type, orNone(e.Reason), e.Object.Kind + "/" + e.Object.Name, orNone(printable(e.Message))}
		if wide {
			r = append(r, e.Severity, e.Object.ID, orNone(e.Owner), fmt.Sprint(e.Revision))
		}
		rows = append(rows, r)
	}
	return rows
}

// printable keeps a message on one line and free of control sequences: a
// task's error may quote what a user gave (an image URL) or what a node
// reported.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return '?'
		}
		return r
	}, s)
}
