package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

func (a *app) imageCommand() *cobra.Command {
	cmd := groupCommand("image", "Inspect and prune the nodes' image caches (admin)", "images")
	cmd.AddCommand(a.imageListCommand(), a.imageDeleteCommand())
	return cmd
}

func (a *app) imageListCommand() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:     "list [--node N]",
		Aliases: []string{"ls"},
		Short:   "List the cached base images of one node or of every ready node",
		Long: `List the base images in the nodes' caches, one row per node and image:
its file names (aliases), sha256, size on disk, when a VM was last created
from it, and the VMs whose disk's backing chain uses it (such an image cannot
be deleted). Without --node every ready node is asked at once; a node that
does not answer is listed with its error and the command still succeeds.
-o wide adds the full sha256, the virtual size and the source URLs;
-o json prints GET /v1/images's answer.`,
		Example: `  otherix image list
  otherix image list --node rack1-n3 -o wide`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var items []messages.NodeImages
			if err := a.call(cmd.Context(), func(ctx context.Context, c *client.Client) (err error) {
				items, err = c.ListImages(ctx, node)
				return err
			}); err != nil {
				return err
			}
			return a.emit(messages.NodeImagesList{Items: items}, func(wide bool) [][]string { return a.imageRows(items, wide) })
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "ask only this node")
	return cmd
}

func (a *app) imageRows(items []messages.NodeImages, wide bool) [][]string {
	head := []string{"NODE", "NAME", "SHA256", "SIZE", "LAST USED", "VMS"}
	if wide {
		head = append(head, "VIRTUAL SIZE", "URLS")
	}
	rows := [][]string{head}
	now := a.now()
	for _, n := range items {
		if n.Error != nil {
			r := []string{n.Node, "<not answering: " + printable(n.Error.Code) + ">", none, none, none, none}
			if wide {
				r = append(r, none, printable(n.Error.Message))
			}
			rows = append(rows, r)
			continue
		}
		for _, img := range n.Images {
			sha := img.SHA256
			if !wide && len(sha) > 12 {
				sha = sha[:12]
			}
			used := none
			if img.LastUsed != nil {
				used = age(*img.LastUsed, now) + " ago"
			}
			vms := none
			if len(img.VMs) > 0 {
				vms = printable(strings.Join(img.VMs, ","))
			}
			r := []string{n.Node, orNone(printable(strings.Join(img.Aliases, ","))), sha, byteSize(img.SizeBytes), used, vms}
			if wide {
				r = append(r, byteSize(img.VirtualSizeBytes), orNone(printable(strings.Join(img.URLs, ","))))
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func (a *app) imageDeleteCommand() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:     "delete SHA256|NAME --node N",
		Aliases: []string{"rm"},
		Short:   "Delete an image from one node's cache",
		Long: `Delete a base image from one node's cache, by its sha256 or by a name it
is listed with (an alias; refused as ambiguous when two images share it). The
node refuses with image_in_use while a VM disk's backing chain uses the image:
delete those VMs first. A VM created later from the same URL downloads the
image again.`,
		Example: `  otherix image delete debian-12-generic-amd64.qcow2 --node rack1-n3
  otherix image delete 3f0c…(64 hex digits) --node rack1-n3`,
		Args: exactArgs(1, "an image sha256 or name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if node == "" {
				return usageError(fmt.Errorf("--node is required: an image is deleted from one node's cache"))
			}
			ref := strings.ToLower(strings.TrimPrefix(args[0], "sha256:"))
			return a.call(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				sha := ref
				if !messages.IsSHA256Hex(ref) {
					var err error
					if sha, err = resolveImage(ctx, c, node, args[0]); err != nil {
						return err
					}
				}
				if err := c.DeleteImage(ctx, node, sha); err != nil {
					return err
				}
				if a.output == outputTable || a.output == outputWide {
					fmt.Fprintf(a.stdout, "image %s deleted from node %s\n", sha, node)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node whose cache holds the image (required)")
	return cmd
}

// resolveImage finds the one image of node listed under name.
func resolveImage(ctx context.Context, c *client.Client, node, name string) (string, error) {
	items, err := c.ListImages(ctx, node)
	if err != nil {
		return "", err
	}
	var found []string
	for _, n := range items {
		if n.Error != nil {
			return "", fmt.Errorf("node %s: %s: %s", node, n.Error.Code, n.Error.Message)
		}
		for _, img := range n.Images {
			if slices.Contains(img.Aliases, name) {
				found = append(found, img.SHA256)
			}
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("node %s caches no image named %q (otherix image list --node %s)", node, name, node)
	case 1:
		return found[0], nil
	}
	return "", usageError(fmt.Errorf("%d images of node %s are named %q: delete one by sha256 (%s)", len(found), node, name, strings.Join(found, ", ")))
}

// byteSize renders n bytes in powers of 1024, as the size flags read them.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + "B"
	}
	f, i := float64(n), 0
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + []string{"", "Ki", "Mi", "Gi", "Ti"}[i]
}
