package volumes

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The three btrfs ioctls the btrfs driver needs (include/uapi/linux/btrfs.h),
// called through golang.org/x/sys/unix. github.com/containerd/btrfs needs
// cgo and the kernel's btrfs headers at build time, and the agent is built
// with CGO_ENABLED=0; github.com/dennwc/btrfs is pure Go but unversioned,
// pulls in a second ioctl package, and its snapshot call puts the snapshot
// inside dst when dst already exists instead of failing. Three fixed-layout
// structs are less to trust than either.

const (
	btrfsSuperMagic = 0x9123683e
	// btrfsFirstFreeObjectID is the inode number of every subvolume's root.
	btrfsFirstFreeObjectID = 256

	btrfsPathNameMax   = 4087
	btrfsSubvolNameMax = 4039
	btrfsSubvolRdonly  = 1 << 1

	// _IOW(0x94, nr, 4096): both argument structs are 4096 bytes.
	iocSubvolCreate = 0x5000940e // nr 14, struct btrfs_ioctl_vol_args
	iocSnapDestroy  = 0x5000940f // nr 15, struct btrfs_ioctl_vol_args
	iocSnapCreateV2 = 0x50009417 // nr 23, struct btrfs_ioctl_vol_args_v2
)

// btrfsVolArgs is struct btrfs_ioctl_vol_args.
type btrfsVolArgs struct {
	fd   int64
	name [btrfsPathNameMax + 1]byte
}

// btrfsVolArgsV2 is struct btrfs_ioctl_vol_args_v2.
type btrfsVolArgsV2 struct {
	fd      int64
	transid uint64
	flags   uint64
	unused  [4]uint64
	name    [btrfsSubvolNameMax + 1]byte
}

var (
	_ [4096 - unsafe.Sizeof(btrfsVolArgs{})]byte
	_ [unsafe.Sizeof(btrfsVolArgs{}) - 4096]byte
	_ [4096 - unsafe.Sizeof(btrfsVolArgsV2{})]byte
	_ [unsafe.Sizeof(btrfsVolArgsV2{}) - 4096]byte
)

func ioctlPtr(fd uintptr, req uintptr, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

// isBtrfs reports whether path lies on a btrfs filesystem.
func isBtrfs(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	return uint32(st.Type) == btrfsSuperMagic, nil
}

// isSubvolume reports whether path is the root of a btrfs subvolume.
func isSubvolume(path string) bool {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Ino == btrfsFirstFreeObjectID
}

func openDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
}

func subvolName(name string, max int) error {
	if name == "" || len(name) > max || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("btrfs: bad subvolume name %q", name)
	}
	return nil
}

// subvolCreate makes an empty subvolume at path (its parent must exist).
func subvolCreate(path string) error {
	dir, name := filepath.Split(path)
	if err := subvolName(name, btrfsPathNameMax); err != nil {
		return err
	}
	d, err := openDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	var args btrfsVolArgs
	copy(args.name[:], name)
	if err := ioctlPtr(d.Fd(), iocSubvolCreate, unsafe.Pointer(&args)); err != nil {
		return &os.PathError{Op: "btrfs subvolume create", Path: path, Err: err}
	}
	return nil
}

// subvolSnapshot makes dst a snapshot of the subvolume src; it fails with
// EEXIST when dst exists. The snapshot appears whole in one btrfs
// transaction.
func subvolSnapshot(src, dst string, readonly bool) error {
	dir, name := filepath.Split(dst)
	if err := subvolName(name, btrfsSubvolNameMax); err != nil {
		return err
	}
	s, err := openDir(src)
	if err != nil {
		return err
	}
	defer s.Close()
	d, err := openDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	args := btrfsVolArgsV2{fd: int64(s.Fd())}
	if readonly {
		args.flags = btrfsSubvolRdonly
	}
	copy(args.name[:], name)
	if err := ioctlPtr(d.Fd(), iocSnapCreateV2, unsafe.Pointer(&args)); err != nil {
		return &os.PathError{Op: "btrfs subvolume snapshot", Path: dst, Err: err}
	}
	return nil
}

// subvolDelete deletes the subvolume at path with its content (root may
// delete a non-empty or read-only subvolume).
func subvolDelete(path string) error {
	dir, name := filepath.Split(path)
	if err := subvolName(name, btrfsPathNameMax); err != nil {
		return err
	}
	d, err := openDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	var args btrfsVolArgs
	copy(args.name[:], name)
	if err := ioctlPtr(d.Fd(), iocSnapDestroy, unsafe.Pointer(&args)); err != nil {
		return &os.PathError{Op: "btrfs subvolume delete", Path: path, Err: err}
	}
	return nil
}
