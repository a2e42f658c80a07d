package messages

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Power states a user can ask for.
const (
	PowerRunning = "running"
	PowerStopped = "stopped"
)

// Guest architectures, named as Go names them (and as nodes report theirs).
const (
	ArchAMD64 = "amd64"
	ArchARM64 = "arm64"
)

// VM phases as observed by the control plane and agents.
const (
	PhasePending  = "pending"  // accepted, waiting to be placed and created on a node
	PhaseCreating = "creating" // an agent is materialising disks and seed
	PhaseRunning  = "running"
	PhaseStopped  = "stopped"
	PhasePaused   = "paused"
	PhaseDeleting = "deleting"
	PhaseFailed   = "failed"
	// PhaseCrashed: the guest kernel panicked and QEMU ended it (see
	// VMConditionInterrupted); otherix vm start boots it again.
	PhaseCrashed = "crashed"
)

// Limits for VM specs. They bound what one request can ask of a node. The
// API and the agent check a spec with the same function (PrepareVMCreate,
// VMSpec.Validate), so a spec the API accepts is never refused by a node for
// its shape.
const (
	// MaxCPUs is QEMU's limit for the machine type the agent runs (i440fx
	// without an IOMMU: 255 vCPUs).
	MaxCPUs         = 255
	MinMemoryMiB    = 64
	MaxMemoryMiB    = 4 << 20 // 4 TiB
	MaxDiskGiB      = 64 << 10
	MaxUserDataSize = 64 << 10 // cloud-init NoCloud seeds stay small
	MaxNICs         = 8
)

// VM is a virtual machine: what the user asked for (Spec) and what was last
// observed (Status).
type VM struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Owner      string    `json:"owner"`
	Generation int64     `json:"generation"`
	Spec       VMSpec    `json:"spec"`
	Status     VMStatus  `json:"status"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Revision is the etcd mod revision the row was read at; it is never stored
	// in the row itself and is what optimistic updates compare against.
	Revision int64 `json:"revision"`
}

// VMSpec is the desired state of a VM.
type VMSpec struct {
	Image      ImageSource `json:"image"`
	CPUs       int         `json:"cpus"`
	MemoryMiB  int         `json:"memory_mib"`
	DiskGiB    int         `json:"disk_gib"`
	UserData   string      `json:"user_data,omitempty"`
	Networks   []NICSpec   `json:"networks,omitempty"`
	Node       string      `json:"node,omitempty"`
	PowerState string      `json:"power_state"`
	// Arch is the guest architecture (Go's names: amd64, arm64); placement
	// only picks nodes of that architecture.
	Arch string `json:"arch,omitempty"`
}

// ImageSource is where a VM's base disk comes from.
type ImageSource struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256,omitempty"`
	// PullPolicy says whether the node asks the origin when it already
	// caches the image: PullIfNotPresent (empty means the same), PullAlways
	// (revalidate with ETag/Last-Modified) or PullNever (fail with
	// image_not_present unless cached).
	PullPolicy string `json:"pull_policy,omitempty"`
}

// Image pull policies of a VM spec (spec.image.pull_policy).
const (
	PullIfNotPresent = "IfNotPresent"
	PullAlways       = "Always"
	PullNever        = "Never"
)

// NICSpec attaches a VM to a network, optionally at a static address.
type NICSpec struct {
	Network string `json:"network"`
	IP      string `json:"ip,omitempty"`
}

// VMStatus is what the control plane last observed of a VM.
type VMStatus struct {
	Phase              string `json:"phase"`
	Node               string `json:"node,omitempty"`
	ObservedGeneration int64  `json:"observed_generation"`
	// Addresses are the NICs' IPv4 addresses, in NIC order.
	Addresses []string `json:"addresses,omitempty"`
	// NICs are the VM's allocated NICs (network, address, MAC), in the
	// order of spec.networks. The control plane allocates them when it
	// creates the VM and releases them when it deletes it; agents never
	// change them.
	NICs       []NICStatus `json:"nics,omitempty"`
	Conditions []Condition `json:"conditions,omitempty"`
	Message    string      `json:"message,omitempty"`
	Pid        int         `json:"pid,omitempty"`
	StartedAt  *time.Time  `json:"started_at,omitempty"`
	// ObservedAt is when the node last reported this VM (agent clock).
	ObservedAt *time.Time `json:"observed_at,omitempty"`
	// ActiveTask is the VM's task in progress; a VM runs one operation at a time.
	ActiveTask string `json:"active_task,omitempty"`
}

// Condition is one named, timestamped fact about a resource.
type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"last_transition_time"`
}

// EntityID implements the store's entity contract.
func (v *VM) EntityID() string { return v.ID }

// EntityRevision implements the store's entity contract.
func (v *VM) EntityRevision() int64 { return v.Revision }

// SetEntityRevision implements the store's entity contract.
func (v *VM) SetEntityRevision(r int64) { v.Revision = r }

// Defaults fills fields a create request may leave out.
func (s *VMSpec) Defaults() {
	if s.CPUs == 0 {
		s.CPUs = 1
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = 512
	}
	if s.DiskGiB == 0 {
		s.DiskGiB = 10
	}
	if s.PowerState == "" {
		s.PowerState = PowerRunning
	}
	if s.Arch == "" {
		s.Arch = ArchAMD64
	}
}

// Validate checks a spec after Defaults; it returns the first violation.
func (s *VMSpec) Validate() error {
	if err := validateImage(s.Image); err != nil {
		return err
	}
	if s.CPUs < 1 || s.CPUs > MaxCPUs {
		return Invalid("spec.cpus", "must be between 1 and %d", MaxCPUs)
	}
	if s.MemoryMiB < MinMemoryMiB || s.MemoryMiB > MaxMemoryMiB {
		return Invalid("spec.memory_mib", "must be between %d and %d", MinMemoryMiB, MaxMemoryMiB)
	}
	if s.DiskGiB < 1 || s.DiskGiB > MaxDiskGiB {
		return Invalid("spec.disk_gib", "must be between 1 and %d", MaxDiskGiB)
	}
	if len(s.UserData) > MaxUserDataSize {
		return Invalid("spec.user_data", "must be at most %d bytes", MaxUserDataSize)
	}
	if s.Arch != ArchAMD64 && s.Arch != ArchARM64 {
		return Invalid("spec.arch", "must be %q or %q", ArchAMD64, ArchARM64)
	}
	if s.PowerState != PowerRunning && s.PowerState != PowerStopped {
		return Invalid("spec.power_state", "must be %q or %q", PowerRunning, PowerStopped)
	}
	if s.Node != "" {
		if err := ValidateName("spec.node", s.Node); err != nil {
			return err
		}
	}
	if len(s.Networks) > MaxNICs {
		return Invalid("spec.networks", "at most %d networks", MaxNICs)
	}
	seen := map[string]bool{}
	for i, n := range s.Networks {
		field := "spec.networks[" + itoa(i) + "]"
		if err := ValidateName(field+".network", n.Network); err != nil {
			return err
		}
		if seen[n.Network] {
			return Invalid(field+".network", "network %q is attached twice", n.Network)
		}
		seen[n.Network] = true
		if n.IP != "" {
			a, err := netip.ParseAddr(n.IP)
			if err != nil || !a.Is4() {
				return Invalid(field+".ip", "%q is not an IPv4 address", n.IP)
			}
		}
	}
	return nil
}

func validateImage(img ImageSource) error {
	if img.URL == "" {
		return Invalid("spec.image.url", "is required")
	}
	u, err := url.Parse(img.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Invalid("spec.image.url", "must be an http or https URL")
	}
	// u.Path is unescaped: %2F and %00 are checked as the bytes they become.
	base := u.Path[strings.LastIndex(u.Path, "/")+1:]
	if err := ValidateImageName(base); err != nil {
		return Invalid("spec.image.url", "%s", err.Error())
	}
	if img.SHA256 != "" {
		if b, err := hex.DecodeString(img.SHA256); err != nil || len(b) != 32 {
			return Invalid("spec.image.sha256", "must be 64 hexadecimal characters")
		}
	}
	switch img.PullPolicy {
	case "", PullIfNotPresent, PullAlways, PullNever:
	default:
		return Invalid("spec.image.pull_policy", "must be %q, %q or %q", PullIfNotPresent, PullAlways, PullNever)
	}
	return nil
}

// MaxImageNameLength bounds the file name an image URL ends in, in bytes: the
// node's image cache names files after it.
const MaxImageNameLength = 128

// ValidateImageName checks the file name an image URL ends in, as the node's
// image cache will name a file after it: not empty, "." or "..", no path
// separator, NUL or other control character, no leading dot (hidden names
// are the cache's own partial downloads and sidecars), at most
// MaxImageNameLength bytes. The error's message is for a person; the API
// wraps it into an invalid_field error naming spec.image.url.
func ValidateImageName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return errors.New("must end in a file name (the image cache names its file after it)")
	case len(name) > MaxImageNameLength:
		return fmt.Errorf("the file name is %d bytes, at most %d are allowed", len(name), MaxImageNameLength)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("the file name %q must not start with a dot", name)
	}
	for _, r := range name {
		if r == '/' || r == '\\' || r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return fmt.Errorf("the file name %q contains a separator, NUL, control character or invalid UTF-8", name)
		}
	}
	return nil
}

// PrepareVMCreate is the one check of a VM create, shared by the API (the VM
// actor, before anything is written) and the agent (before it accepts a
// vm.create task): the name, then the spec with its defaults filled in. It
// returns the spec as it will be stored.
func PrepareVMCreate(name string, spec VMSpec) (VMSpec, error) {
	if err := ValidateName("name", name); err != nil {
		return VMSpec{}, err
	}
	spec.Defaults()
	if err := spec.Validate(); err != nil {
		return VMSpec{}, err
	}
	return spec, nil
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	return string(b[n:])
}
