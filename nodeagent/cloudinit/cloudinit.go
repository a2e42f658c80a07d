// Package cloudinit writes the NoCloud seed image a guest's cloud-init reads
// at first boot: an ISO9660 volume labelled "cidata" holding meta-data,
// user-data and, optionally, network-config.
package cloudinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unicode"
	"unicode/utf8"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// MaxUserData is the largest user-data accepted, in bytes.
const MaxUserData = 64 << 10

// seedSize is the exact size of every seed image. go-diskfs leaves the
// image at the size it was created with, and busybox findfs (used by some
// minimal guests to locate the "cidata" label) rejects images below about
// 68 KiB, so one fixed, generous size keeps every guest happy.
const seedSize = 1 << 20

// volumeLabel is the label cloud-init's NoCloud datasource looks for.
const volumeLabel = "cidata"

// emptyUserData is written when the caller gives none: cloud-init still
// wants a parseable user-data file.
const emptyUserData = "#cloud-config\n{}\n"

// Seed is what goes into the seed image.
type Seed struct {
	InstanceID string // cloud-init reruns first-boot modules when this changes
	Hostname   string // a single DNS label
	UserData   string // written as given; at most MaxUserData bytes
	// NetworkConfig is optional network-config v2 YAML; the file is left
	// out when this is empty so cloud-init falls back to its default.
	NetworkConfig []byte
}

// Errors returned by Write, matched with errors.Is.
var (
	ErrInvalidSeed      = errors.New("cloudinit: invalid seed")
	ErrUserDataTooLarge = errors.New("cloudinit: user-data too large")
)

// Write builds the seed image for s at path with mode 0600. The file
// appears complete or not at all: it is built under a temporary name in the
// same directory, synced, then renamed.
func Write(path string, s Seed) error {
	if err := s.validate(); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cloudinit: create seed: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("cloudinit: create seed: %w", err)
	}
	if err := buildISO(tmp, s); err != nil {
		return fmt.Errorf("cloudinit: build seed: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("cloudinit: sync seed: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cloudinit: close seed: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cloudinit: commit seed: %w", err)
	}
	committed = true
	syncDir(filepath.Dir(path))
	return nil
}

func (s Seed) validate() error {
	if s.InstanceID == "" {
		return fmt.Errorf("%w: instance id is empty", ErrInvalidSeed)
	}
	if len(s.InstanceID) > 255 {
		return fmt.Errorf("%w: instance id longer than 255 bytes", ErrInvalidSeed)
	}
	// Invalid UTF-8 would reach meta-data as U+FFFD: cloud-init would see
	// another instance id than the agent wrote.
	if !utf8.ValidString(s.InstanceID) {
		return fmt.Errorf("%w: instance id is not valid UTF-8", ErrInvalidSeed)
	}
	for _, r := range s.InstanceID {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: instance id has a non-printable character", ErrInvalidSeed)
		}
	}
	if !isDNSLabel(s.Hostname) {
		return fmt.Errorf("%w: hostname %q is not a DNS label (1-63 of a-z, 0-9, '-', not starting or ending with '-')", ErrInvalidSeed, s.Hostname)
	}
	if len(s.UserData) > MaxUserData {
		return fmt.Errorf("%w: %d bytes, the limit is %d bytes", ErrUserDataTooLarge, len(s.UserData), MaxUserData)
	}
	return nil
}

// isDNSLabel reports whether h is an RFC 1123 label. Upper case is allowed
// because resolvers compare labels case-insensitively.
func isDNSLabel(h string) bool {
	if len(h) == 0 || len(h) > 63 || h[0] == '-' || h[len(h)-1] == '-' {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// metaData renders meta-data. Values are JSON strings, which YAML reads as
// double-quoted scalars, so an odd instance id cannot break the document.
func metaData(s Seed) []byte {
	id, _ := json.Marshal(s.InstanceID)
	host, _ := json.Marshal(s.Hostname)
	return fmt.Appendf(nil, "instance-id: %s\nlocal-hostname: %s\n", id, host)
}

func buildISO(f *os.File, s Seed) error {
	if err := f.Truncate(seedSize); err != nil {
		return err
	}
	// go-diskfs stages files in a workspace directory before Finalize lays
	// them out; keep it next to the seed so nothing leaks into /tmp.
	work, err := os.MkdirTemp(filepath.Dir(f.Name()), ".cidata-work-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// The workspace root becomes the ISO root, Rock Ridge mode included;
	// MkdirTemp's 0700 would hide the seed from a non-root reader.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}

	fsys, err := iso9660.Create(file.New(f, false), seedSize, 0, 2048, work)
	if err != nil {
		return err
	}
	defer fsys.Close()

	userData := s.UserData
	if userData == "" {
		userData = emptyUserData
	}
	files := []struct {
		name string
		data []byte
	}{
		{"meta-data", metaData(s)},
		{"user-data", []byte(userData)},
	}
	if len(s.NetworkConfig) > 0 {
		files = append(files, struct {
			name string
			data []byte
		}{"network-config", s.NetworkConfig})
	}
	for _, fl := range files {
		w, err := fsys.OpenFile("/"+fl.name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("add %s: %w", fl.name, err)
		}
		if _, err := w.Write(fl.data); err != nil {
			w.Close()
			return fmt.Errorf("add %s: %w", fl.name, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("add %s: %w", fl.name, err)
		}
	}
	err = fsys.Finalize(iso9660.FinalizeOptions{
		RockRidge:        true,
		Joliet:           true,
		VolumeIdentifier: volumeLabel,
	})
	if err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	if err := padIdentifiers(f); err != nil {
		return fmt.Errorf("pad identifiers: %w", err)
	}
	// Finalize may shrink the file to the data it wrote; pad back so every
	// seed has the same, findfs-friendly size.
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() > seedSize {
		return fmt.Errorf("image is %d bytes, more than the %d reserved", st.Size(), seedSize)
	}
	return f.Truncate(seedSize)
}

// syncDir makes a rename durable. It is best effort: the rename already
// happened and a failure here only weakens crash safety.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}

// Volume descriptor layout (ECMA-119 8.4, Joliet spec).
const (
	sectorSize      = 2048
	firstDescriptor = 16
	typePrimary     = 1
	typeSupplement  = 2
	typeTerminator  = 255
)

// padIdentifiers rewrites the system and volume identifiers so they are
// padded with spaces as ECMA-119 requires: go-diskfs pads them with NULs,
// which some readers keep as part of the label.
func padIdentifiers(f *os.File) error {
	for sector := int64(firstDescriptor); sector < firstDescriptor+16; sector++ {
		var vd [sectorSize]byte
		off := sector * sectorSize
		if _, err := f.ReadAt(vd[:], off); err != nil {
			return err
		}
		if string(vd[1:6]) != "CD001" {
			return fmt.Errorf("sector %d is not a volume descriptor", sector)
		}
		switch vd[0] {
		case typeTerminator:
			return nil
		case typePrimary:
			padField(vd[8:40], []byte{' '})
			padField(vd[40:72], []byte{' '})
		case typeSupplement:
			// Joliet stores identifiers as UCS-2 big endian.
			padField(vd[8:40], []byte{0, ' '})
			padField(vd[40:72], []byte{0, ' '})
		default:
			continue
		}
		if _, err := f.WriteAt(vd[:], off); err != nil {
			return err
		}
	}
	return errors.New("no volume descriptor set terminator")
}

// padField replaces the trailing run of NUL units in field with pad.
func padField(field, pad []byte) {
	n := len(pad)
	for i := len(field) - n; i >= 0; i -= n {
		for j := range n {
			if field[i+j] != 0 {
				return
			}
		}
		copy(field[i:i+n], pad)
	}
}
