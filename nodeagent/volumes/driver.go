package volumes

import (
	"context"
	"time"
)

// Driver stores the volumes of one pool on one node. Both drivers keep the
// same contract, so the agent's task steps call them alike:
//
//   - every operation appears complete or not at all after a crash, once
//     Recover has run at the next start;
//   - names are checked with ValidName before any path is built;
//   - a mutating operation on a volume whose owner marker names another
//     node is refused with CodeOwnedByOtherNode (see Open);
//   - snapshots here are offline: the caller guarantees no QEMU has the
//     volume open (the live path goes through QMP in nodeagent/qemu).
//
// Operations on one volume are serialised inside a Driver; a Driver is safe
// for concurrent use.
type Driver interface {
	// Name is "dir" or "btrfs".
	Name() string
	// Create makes a new volume, empty or backed by an image base file.
	Create(ctx context.Context, opts CreateOptions) (Info, error)
	// Clone makes a new volume whose content is a volume's or one of its
	// snapshots' at this moment, without a full copy where the
	// filesystem allows.
	Clone(ctx context.Context, opts CloneOptions) (Info, error)
	// Resize grows a volume's virtual size; a smaller size is refused with
	// CodeShrinkUnsupported, the same size is a no-op.
	Resize(ctx context.Context, volume string, size int64) (Info, error)
	// Delete removes a volume, its snapshots and its owner marker. It is
	// refused while another volume's chain reads one of its snapshots.
	Delete(ctx context.Context, volume string) error
	// Stat describes a volume.
	Stat(ctx context.Context, volume string) (Info, error)
	// List returns up to limit volume names greater than after, sorted,
	// for chunked scans; Page.Next is the after of the next call, "" at the
	// end.
	List(ctx context.Context, after string, limit int) (Page, error)

	// CreateSnapshot takes an offline snapshot of a stopped VM's volume.
	CreateSnapshot(ctx context.Context, volume, snapshot string) (SnapshotInfo, error)
	// DeleteSnapshot removes a snapshot; refused with CodeSnapshotInUse
	// while a clone's backing chain reads it.
	DeleteSnapshot(ctx context.Context, volume, snapshot string) error
	// ListSnapshots returns a volume's snapshots sorted by name.
	ListSnapshots(ctx context.Context, volume string) ([]SnapshotInfo, error)

	// Open claims the volume for this node before QEMU opens it: it writes
	// the owner marker, or refuses with CodeOwnedByOtherNode when another
	// node holds it with an epoch at least as high. The control plane's
	// epoch (a generation it raises when it moves a volume) lets a node
	// take over from a dead one.
	Open(ctx context.Context, volume string, epoch uint64) (Info, error)
	// Release drops this node's owner marker (after QEMU closed the
	// volume). Releasing a volume another node owns changes nothing.
	Release(ctx context.Context, volume string) error

	// Recover resolves what a crash of this node left half done: it reads
	// this node's journal, finishes or undoes each recorded operation, and
	// removes this node's temporary files. Call it once at start, before
	// any other operation.
	Recover(ctx context.Context) (RecoverReport, error)
}

// CreateOptions describe a new volume.
type CreateOptions struct {
	// Name of the volume (ValidName).
	Name string
	// Size is the virtual size in bytes, a positive multiple of 512. With a
	// Base, zero means the base's virtual size.
	Size int64
	// Base is an absolute path to an image file (qcow2 or raw, normalised
	// by nodeagent/images) the volume starts as. The dir driver keeps it
	// as the volume's backing file, so it must outlive the volume; the
	// btrfs driver copies it.
	Base string
}

// CloneOptions describe a clone.
type CloneOptions struct {
	// Name of the new volume.
	Name string
	// Source is the volume cloned from.
	Source string
	// Snapshot, when set, clones that snapshot of Source instead of its
	// current content.
	Snapshot string
	// Size grows the clone; zero keeps the source's virtual size.
	Size int64
}

// check validates the name before any path is built from it, and the size
// (which a create from a base may leave zero); both drivers call it first.
func (o CreateOptions) check() error {
	if err := checkName("volume", o.Name); err != nil {
		return err
	}
	if o.Base == "" || o.Size != 0 {
		return checkSize(o.Size)
	}
	return nil
}

// check validates the names before any path is built from them, and the
// size; both drivers call it first.
func (o CloneOptions) check() error {
	if err := checkName("volume", o.Name); err != nil {
		return err
	}
	if err := checkName("source volume", o.Source); err != nil {
		return err
	}
	if o.Snapshot != "" {
		if err := checkName("snapshot", o.Snapshot); err != nil {
			return err
		}
	}
	if o.Size != 0 {
		if err := checkSize(o.Size); err != nil {
			return err
		}
	}
	if o.Name == o.Source {
		return newError(CodeExists, "volume "+o.Name+" already exists", nil)
	}
	return nil
}

// Info describes a volume.
type Info struct {
	Name string
	// Path is the file QEMU opens, in Format ("qcow2" or "raw").
	Path   string
	Format string
	// VirtualSize is the size the guest sees.
	VirtualSize int64
	// Allocated is the bytes the volume's own file occupies on disk (its
	// backing files not included; extents shared by reflink or btrfs
	// snapshots are counted in each file that shares them).
	Allocated int64
	// Chain lists the backing files below Path, nearest first.
	Chain []ChainEntry
	// Owner is the node holding the owner marker, if any.
	Owner *Owner
}

// ChainEntry is one backing file of a volume.
type ChainEntry struct {
	Path   string
	Format string
}

// SnapshotInfo describes an offline snapshot.
type SnapshotInfo struct {
	Volume      string
	Name        string
	Path        string
	Format      string
	VirtualSize int64
	Allocated   int64
	Created     time.Time
}

// Page is one chunk of List.
type Page struct {
	Names []string
	// Next is the after for the next call; "" when the listing is done.
	Next string
}

// Owner is a volume's owner marker: the node that may write it, and the
// control plane's epoch for that claim.
type Owner struct {
	Node  string    `json:"node"`
	Epoch uint64    `json:"epoch"`
	Since time.Time `json:"since"`
}

// RecoverReport says what Recover found.
type RecoverReport struct {
	// Completed lists journal entries finished ("delete vol-1").
	Completed []string
	// RolledBack lists journal entries undone.
	RolledBack []string
	// TempsRemoved counts temporary files and subvolumes removed.
	TempsRemoved int
}

// Config configures a driver.
type Config struct {
	// Root is the pool directory; the driver keeps everything under it
	// (see docs/storage.md, "Volume drivers", for the layout).
	Root string
	// Node is this node's name (ValidName). It names the owner markers,
	// the journal and the temporary files, so two nodes sharing one
	// --shared directory never touch each other's.
	Node string
	// QemuImg is the qemu-img binary; "" means "qemu-img" on PATH.
	QemuImg string
}

// Driver names.
const (
	DriverDir   = "dir"
	DriverBtrfs = "btrfs"
)

// New returns the driver called name for cfg.Root, creating the layout's
// directories. It does not run Recover.
func New(name string, cfg Config) (Driver, error) {
	switch name {
	case DriverDir:
		d, err := newDir(cfg)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return d, nil
	case DriverBtrfs:
		b, err := newBtrfs(cfg)
		if err != nil {
			return nil, err
		}
		return b, nil
	default:
		return nil, newError(CodeDriverUnsupported, "unknown driver "+quote(name)+", want dir or btrfs", nil)
	}
}
