// Package volumes stores a pool's volumes on a node's disk: the `dir`
// driver (one qcow2 file per volume; reflink copies on xfs and btrfs) and
// the `btrfs` driver (one subvolume per volume holding a raw file, btrfs
// snapshots for snapshots and clones). It is the agent's library; the
// control plane's pools and volumes live in etcd, and the live side of a
// running VM (hot-plug, block_resize, live snapshots) is QMP.
//
// A task step of the agent uses it like this:
//
//	d, err := volumes.New(pool.Driver, volumes.Config{Root: pool.Path, Node: nodeName})
//	...
//	rep, err := d.Recover(ctx) // once, at agent start, before anything else
//	...
//	info, err := d.Create(ctx, volumes.CreateOptions{Name: vol, Size: size, Base: imagePath})
//	info, err = d.Open(ctx, vol, epoch) // claim it before QEMU opens info.Path (info.Format)
//	...
//	err = d.Release(ctx, vol) // after QEMU closed it
//
// Every failure carries a stable code (ErrorCode): the agent API passes it
// on unchanged. See docs/storage.md, "Volume drivers", for the layout on
// disk, the crash-safety rules and the owner marker.
package volumes
