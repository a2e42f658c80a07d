package gateway

import (
	"context"
	"errors"
	"sort"
	"sync"

	"github.com/otherix/otherix/http/agentclient"
	"github.com/otherix/otherix/messages"
	"github.com/otherix/otherix/persistence/store"
)

// ImageCaller lists and deletes a node's cached images (the agent's
// /v1/images). The agent client implements it; a Calls without it makes
// the image endpoints answer node_unreachable.
type ImageCaller interface {
	Images(ctx context.Context, n agentclient.Node) ([]messages.NodeImage, error)
	DeleteImage(ctx context.Context, n agentclient.Node, sha256 string) error
}

var _ ImageCaller = (*agentclient.Client)(nil)

// maxImageFanout bounds the agents asked at once by a fleet-wide list.
const maxImageFanout = 16

// ListImages asks node's agent for its cached images; with node empty it
// asks every ready node at once. Each node is answered on its own: one
// that does not answer is listed with an error, and the others still are.
func (g *Gateway) ListImages(ctx context.Context, node string) ([]messages.NodeImages, error) {
	var names []string
	if node != "" {
		if err := messages.ValidateName("node", node); err != nil {
			return nil, err
		}
		if _, err := g.st.NodeByName(ctx, node); err != nil {
			return nil, err
		}
		names = []string{node}
	} else {
		page := store.Page{Limit: 200}
		for {
			nodes, next, err := g.st.ListNodes(ctx, page)
			if err != nil {
				return nil, err
			}
			for _, n := range nodes {
				if n.Phase == messages.NodeReady {
					names = append(names, n.Name)
				}
			}
			if next == "" {
				break
			}
			page.Cursor = next
		}
	}
	sort.Strings(names)
	out := make([]messages.NodeImages, len(names))
	sem := make(chan struct{}, maxImageFanout)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = g.nodeImages(ctx, name)
		}()
	}
	wg.Wait()
	return out, nil
}

func (g *Gateway) nodeImages(ctx context.Context, name string) messages.NodeImages {
	res := messages.NodeImages{Node: name, Images: []messages.NodeImage{}}
	ic, n, err := g.imageCallerFor(ctx, name)
	if err == nil {
		var imgs []messages.NodeImage
		if imgs, err = ic.Images(ctx, n); err == nil {
			if imgs != nil {
				res.Images = imgs
			}
			return res
		}
		err = imageCallError(name, err)
	}
	var me *messages.Error
	if errors.As(err, &me) {
		res.Error = &messages.NodeAnswerError{Code: me.Code, Message: me.Message}
	} else {
		res.Error = &messages.NodeAnswerError{Code: "internal", Message: err.Error()}
	}
	return res
}

// DeleteImage removes the image sha256 from node's cache; the agent
// refuses with image_in_use while a VM disk's backing chain uses it.
func (g *Gateway) DeleteImage(ctx context.Context, node, sha256 string) error {
	if err := messages.ValidateName("node", node); err != nil {
		return err
	}
	if !messages.IsSHA256Hex(sha256) {
		return messages.Invalid("sha256", "must be 64 lower-case hexadecimal characters")
	}
	if _, err := g.st.NodeByName(ctx, node); err != nil {
		return err
	}
	ic, n, err := g.imageCallerFor(ctx, node)
	if err != nil {
		return err
	}
	if err := ic.DeleteImage(ctx, n, sha256); err != nil {
		return imageCallError(node, err)
	}
	return nil
}

func (g *Gateway) imageCallerFor(ctx context.Context, name string) (ImageCaller, agentclient.Node, error) {
	ac, n, err := g.agentFor(ctx, name)
	if err != nil {
		return nil, n, err
	}
	ic, ok := ac.(ImageCaller)
	if !ok {
		return nil, n, errNoAgentCaller
	}
	return ic, n, nil
}

// imageCallError maps a failed image call: an unreachable node is
// node_unreachable; the agent's considered answer (image_in_use,
// image_not_found) passes through with its code.
func imageCallError(node string, err error) error {
	var me *messages.Error
	switch {
	case agentclient.Retryable(err):
		return &messages.Error{Kind: messages.KindUnavailable, Code: "node_unreachable",
			Message: "node " + node + " cannot be reached now; retry later",
			Details: map[string]any{"node": node}, Err: err}
	case errors.As(err, &me):
		return me
	}
	return err
}
