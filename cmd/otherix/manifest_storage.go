package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/otherix/otherix/http/client"
	"github.com/otherix/otherix/messages"
)

// Storage kinds of a manifest: a pool (admin) and a volume.
const kindVolume = "volume"

// poolDocument is the strict shape of a "kind: StoragePool" document; its
// spec is the API's own.
type poolDocument struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   manifestMetadata  `json:"metadata"`
	Spec       messages.PoolSpec `json:"spec"`
}

// volumeDocument is the strict shape of a "kind: Volume" document. Its
// size is written as on the command line ("20Gi"); size_bytes is the
// API's spelling, also accepted.
type volumeDocument struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Metadata   manifestMetadata `json:"metadata"`
	Spec       struct {
		Pool      string `json:"pool,omitempty"`
		Node      string `json:"node,omitempty"`
		Size      string `json:"size,omitempty"`
		SizeBytes int64  `json:"size_bytes,omitempty"`
	} `json:"spec"`
}

// decodePool decodes a StoragePool document strictly and checks it as the
// API would.
func decodePool(body []byte, withSpec bool) (resource, error) {
	var doc poolDocument
	if err := strictDecode(body, &doc); err != nil {
		return resource{}, err
	}
	name := doc.Metadata.Name
	if name == "" {
		return resource{}, errors.New("metadata.name is required")
	}
	r := resource{kind: kindStoragePool, name: name, pool: messages.CreatePoolRequest{Name: name, Spec: doc.Spec}}
	if err := messages.ValidateName("metadata.name", name); err != nil {
		return r, err
	}
	if withSpec {
		p, err := messages.BuildPool(r.pool)
		if err != nil {
			return r, err
		}
		r.pool.Spec = p.Spec // the node list sorted, as the API keeps it
	}
	return r, nil
}

// decodeVolume decodes a Volume document strictly and checks it.
func decodeVolume(body []byte, withSpec bool) (resource, error) {
	var doc volumeDocument
	if err := strictDecode(body, &doc); err != nil {
		return resource{}, err
	}
	name := doc.Metadata.Name
	if name == "" {
		return resource{}, errors.New("metadata.name is required")
	}
	r := resource{kind: kindVolume, name: name, volume: messages.CreateVolumeRequest{Name: name,
		Spec: messages.VolumeSpec{Pool: doc.Spec.Pool, Node: doc.Spec.Node, SizeBytes: doc.Spec.SizeBytes}}}
	if err := messages.ValidateName("metadata.name", name); err != nil {
		return r, err
	}
	if !withSpec {
		return r, nil
	}
	switch {
	case doc.Spec.Size != "" && doc.Spec.SizeBytes != 0:
		return r, messages.Invalid("spec.size", "give size or size_bytes, not both")
	case doc.Spec.Size != "":
		n, err := parseVolumeSize(doc.Spec.Size)
		if err != nil {
			return r, messages.Invalid("spec.size", "%v", err)
		}
		r.volume.Spec.SizeBytes = n
	}
	return r, messages.ValidateVolumeRequest(&r.volume)
}

// applyPool creates a missing pool, or makes an existing one's node set
// match its manifest; a differing driver, path or shared is refused.
func (a *app) applyPool(ctx context.Context, r resource) (applied, error) {
	rep := applied{Resource: r.ref()}
	have, err := a.getPool(ctx, r.name)
	switch {
	case client.ErrorCode(err) == messages.ErrNotFound.Code:
		var p *messages.StoragePool
		err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
			p, err = c.CreatePool(ctx, r.pool, opt)
			return err
		})
		if err != nil {
			return rep, err
		}
		rep.Action, rep.Pool = "created", p
		return rep, nil
	case err != nil:
		return rep, err
	}
	want := r.pool.Spec
	var diff []string
	if want.Driver != have.Spec.Driver {
		diff = append(diff, fmt.Sprintf("spec.driver (%s→%s)", have.Spec.Driver, want.Driver))
	}
	if want.Path != have.Spec.Path {
		diff = append(diff, fmt.Sprintf("spec.path (%s→%s)", poolPathText(have), want.Path))
	}
	if want.Shared != have.Spec.Shared {
		diff = append(diff, fmt.Sprintf("spec.shared (%t→%t)", have.Spec.Shared, want.Shared))
	}
	if len(diff) > 0 {
		return rep, planError(fmt.Errorf("%s cannot change on an existing pool (its data is there)", strings.Join(diff, ", ")))
	}
	rep.Action, rep.Pool = "unchanged", have
	if want.AllNodes == have.Spec.AllNodes && slices.Equal(want.Nodes, have.Spec.Nodes) {
		return rep, nil
	}
	nodes, all := slices.Clone(want.Nodes), want.AllNodes
	if nodes == nil {
		nodes = []string{}
	}
	var p *messages.StoragePool
	if err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
		p, err = c.UpdatePool(ctx, have.ID, client.UpdatePoolRequest{Spec: client.UpdatePoolSpec{Nodes: &nodes, AllNodes: &all}},
			opt, client.WithIfMatch(have.Revision))
		return err
	}); err != nil {
		return rep, err
	}
	rep.Action, rep.Pool = "configured", p
	rep.Changes = []string{fmt.Sprintf("nodes %s→%s", poolNodesText(have), poolNodesText(p))}
	return rep, nil
}

// applyVolume creates a missing volume, or grows an existing one to its
// manifest's size; a different pool or node, or a smaller size, is refused.
func (a *app) applyVolume(ctx context.Context, r resource) (applied, error) {
	rep := applied{Resource: r.ref()}
	have, err := a.getVolume(ctx, r.name)
	switch {
	case client.ErrorCode(err) == messages.ErrNotFound.Code:
		var v *messages.Volume
		err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
			v, err = c.CreateVolume(ctx, r.volume, opt)
			return err
		})
		if err != nil {
			return rep, err
		}
		rep.Action, rep.Volume = "created", v
		return rep, nil
	case err != nil:
		return rep, err
	}
	want := r.volume.Spec
	var diff []string
	if want.Pool != "" && want.Pool != have.Spec.Pool {
		diff = append(diff, fmt.Sprintf("spec.pool (%s→%s)", have.Spec.Pool, want.Pool))
	}
	if want.Node != "" && want.Node != have.Spec.Node {
		diff = append(diff, fmt.Sprintf("spec.node (%s→%s)", orNone(have.Spec.Node), want.Node))
	}
	if len(diff) > 0 {
		return rep, planError(fmt.Errorf("%s cannot change on an existing volume", strings.Join(diff, ", ")))
	}
	rep.Action, rep.Volume = "unchanged", have
	if want.SizeBytes == have.Spec.SizeBytes {
		return rep, nil
	}
	var v *messages.Volume
	if err := a.write(ctx, a.newKey(), func(ctx context.Context, c *client.Client, opt client.CallOption) (err error) {
		v, err = c.ResizeVolume(ctx, have.ID, want.SizeBytes, opt)
		return err
	}); err != nil {
		return rep, err
	}
	rep.Action, rep.Volume = "configured", v
	rep.Changes = []string{fmt.Sprintf("size %s→%s", sizeText(have.Spec.SizeBytes), sizeText(v.Spec.SizeBytes))}
	return rep, nil
}
