package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
)

// completionTimeout bounds the API call that completes a name: a shell
// waiting on a Tab must not hang on an unreachable server.
const completionTimeout = 3 * time.Second

// completionLimit is how many names one completion asks for (one page).
const completionLimit = 200

// addNameCompletion makes Tab complete resource names from the server: the
// first argument of every "vm|node|network VERB NAME" command but create,
// and the kind then the name of "get", "describe" and "delete". It walks the
// finished tree, so a command added later completes without saying so.
// Cobra's own "completion bash|zsh|fish|powershell" prints the scripts.
func (a *app) addNameCompletion(root *cobra.Command) {
	for _, noun := range root.Commands() {
		kind, ok := completableKinds[noun.Name()]
		if !ok {
			continue
		}
		for _, verb := range noun.Commands() {
			if verb.ValidArgsFunction != nil || verb.Name() == "create" || !strings.Contains(verb.Use, "NAME") {
				continue
			}
			verb.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				if len(args) > 0 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return a.completeNames(cmd.Context(), kind, toComplete), cobra.ShellCompDirectiveNoFileComp
			}
		}
	}
	for _, verb := range root.Commands() {
		switch verb.Name() {
		case "get", "describe", "delete":
		default:
			continue
		}
		verb.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			switch len(args) {
			case 0:
				var kinds []string
				for _, k := range resourceKinds {
					if strings.HasPrefix(k, toComplete) {
						kinds = append(kinds, k)
					}
				}
				return kinds, cobra.ShellCompDirectiveNoFileComp
			case 1:
				kind, err := resolveKind(args[0])
				if err != nil {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				return a.completeNames(cmd.Context(), kind, toComplete), cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
	}
}

// completableKinds maps a noun command to the kind whose names it takes.
var completableKinds = map[string]string{"vm": kindNameVM, "node": kindNameNode, "network": kindNameNetwork}

// completeNames lists the names of kind that start with prefix, as the
// current context's user sees them; any failure completes nothing.
func (a *app) completeNames(ctx context.Context, kind, prefix string) []string {
	c, err := a.client()
	if err != nil {
		return nil
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	var names []string
	o := client.ListOptions{Limit: completionLimit}
	switch kind {
	case kindNameVM:
		vms, _, err := c.ListVMs(ctx, o)
		if err != nil {
			return nil
		}
		for _, v := range vms {
			names = append(names, v.Name)
		}
	case kindNameNode:
		nodes, _, err := c.ListNodes(ctx, o)
		if err != nil {
			return nil
		}
		for _, n := range nodes {
			names = append(names, n.Name)
		}
	case kindNameNetwork:
		nets, _, err := c.ListNetworks(ctx, o)
		if err != nil {
			return nil
		}
		for _, n := range nets {
			names = append(names, n.Name)
		}
	}
	out := names[:0]
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}
