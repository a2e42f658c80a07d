package storagepool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/otherix/otherix/messages"
)

// btrfsMagic is BTRFS_SUPER_MAGIC, statfs's f_type on btrfs.
const btrfsMagic = 0x9123683E

// realise makes pool p usable at dir: for btrfs, checks the filesystem
// first (nothing is created on the wrong one); makes the directory (0700)
// when it is missing; then claims it with the marker, refusing a directory
// another cluster or pool marked or a non-empty one nobody marked.
// adopt skips the emptiness check: the default pool at the agent's own
// --pool-dir, which held images and disks before pools had markers.
func realise(p messages.DesiredPool, dir, cluster string, adopt bool, statfs func(string, *unix.Statfs_t) error) error {
	if p.Driver == messages.PoolDriverBtrfs {
		if err := checkBtrfs(dir, statfs); err != nil {
			return err
		}
	}
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("create parent of %s: %w", dir, err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	case err != nil:
		return fmt.Errorf("stat %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is a %s", ErrNotDirectory, dir, kind(fi.Mode()))
	}
	if p.Shared {
		if err := checkMountPoint(dir); err != nil {
			return err
		}
	}
	want := Marker{Cluster: cluster, PoolID: p.ID, Pool: p.Name}
	m, ok, err := readMarker(dir)
	if err != nil {
		return err
	}
	if ok {
		if m == want {
			return nil
		}
		if m.Cluster != cluster {
			if adopt {
				return writeMarker(dir, want)
			}
			return fmt.Errorf("%w: %s is marked by cluster %s (pool %s), not this cluster (%s)",
				ErrForeignMarker, dir, short(m.Cluster), m.Pool, short(cluster))
		}
		if m.PoolID != p.ID {
			if adopt {
				return writeMarker(dir, want)
			}
			return fmt.Errorf("%w: %s is marked by pool %s (%s) of this cluster", ErrForeignMarker, dir, m.Pool, m.PoolID)
		}
		// Same pool, renamed marker content: refresh it.
		return writeMarker(dir, want)
	}
	if !adopt {
		isEmpty, err := empty(dir)
		if err != nil {
			return fmt.Errorf("read %s: %w", dir, err)
		}
		if !isEmpty {
			return fmt.Errorf("%w: %s holds files and no %s; empty it or choose another path", ErrForeignDirectory, dir, MarkerFile)
		}
	}
	return writeMarker(dir, want)
}

// checkMountPoint refuses a shared pool's path that is not a mount point:
// a shared pool is a network filesystem mounted there, and an empty
// mount-point directory with nothing mounted on it would otherwise be
// claimed, and the node's local disk used as if it were the shared one.
func checkMountPoint(dir string) error {
	var here, parent unix.Stat_t
	if err := unix.Stat(dir, &here); err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return fmt.Errorf("stat %s: %w", filepath.Dir(dir), err)
	}
	if here.Dev == parent.Dev && here.Ino != parent.Ino {
		return fmt.Errorf("%w: %s is a shared pool but nothing is mounted there (it is on the same filesystem as %s)",
			ErrNotMounted, dir, filepath.Dir(dir))
	}
	return nil
}

// checkBtrfs checks that dir, or its nearest existing ancestor when it
// does not exist yet, is on btrfs.
func checkBtrfs(dir string, statfs func(string, *unix.Statfs_t) error) error {
	at := dir
	for {
		var st unix.Statfs_t
		err := statfs(at, &st)
		if errors.Is(err, unix.ENOENT) && at != "/" {
			at = filepath.Dir(at)
			continue
		}
		if err != nil {
			return fmt.Errorf("statfs %s: %w", at, err)
		}
		if uint32(st.Type) != btrfsMagic {
			return fmt.Errorf("%w: %s is on a filesystem of type 0x%x; a btrfs pool needs btrfs (mount one there or use the dir driver)",
				ErrNotBtrfs, at, uint32(st.Type))
		}
		return nil
	}
}

// space is the size, used and free (to unprivileged users) bytes of the
// filesystem under dir.
func space(dir string, statfs func(string, *unix.Statfs_t) error) (total, used, free int64, err error) {
	var st unix.Statfs_t
	if err := statfs(dir, &st); err != nil {
		return 0, 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := int64(st.Bsize)
	return int64(st.Blocks) * bs, int64(st.Blocks-st.Bfree) * bs, int64(st.Bavail) * bs, nil
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsRegular():
		return "regular file"
	}
	return "special file"
}

func short(fp string) string {
	if len(fp) > 16 {
		return fp[:16]
	}
	return fp
}
