#!/usr/bin/env bash
# install-deps.sh: make sure the tools the build and the test suites need are
# present. As root it installs missing Debian packages; otherwise it names
# them and fails, so a missing tool is never discovered halfway through
# `make check`.
#
#   scripts/install-deps.sh                 what building and running needs (make dev)
#   scripts/install-deps.sh --test          that plus what only the tests need (make check)
#   scripts/install-deps.sh [--test] --check  only report; exit 1 if anything is missing
set -euo pipefail

# NEEDS maps what must exist to the Debian package that provides it. A key is
# a command looked up on PATH, or an absolute path for things that are not
# commands (headers, static binaries). Later issues add their tools here, e.g.
#   [qemu-system-x86_64]=qemu-system-x86  [qemu-img]=qemu-utils
#   [nft]=nftables  [ip]=iproute2  [wg]=wireguard-tools  [xorriso]=xorriso
#   [/bin/busybox]=busybox-static
declare -A NEEDS=(
	[make]=make
	[git]=git
	# VMs: the agent runs QEMU and makes overlays with qemu-img.
	[qemu-system-x86_64]=qemu-system-x86
	[qemu-img]=qemu-utils
	# The e2e test guest is built from Debian packages (test/guest/build.sh):
	# static busybox as init, syslinux as the bootloader inside the image,
	# and mtools/dosfstools/sfdisk to make its disk without loop devices.
	[/bin/busybox]=busybox-static
	[syslinux]=syslinux
	[/usr/lib/syslinux/mbr/mbr.bin]=syslinux-common
	[mcopy]=mtools
	[mkfs.fat]=dosfstools
	[sfdisk]=fdisk
	[cpio]=cpio
	# The browser console (web/) is bundled with npm by `make build`.
	# Machines that already have Node.js and npm (from another source than
	# Debian) keep theirs: only a missing command is installed.
	[node]=nodejs
	[npm]=npm
)

# TEST_NEEDS are needed by the test suites only (--test, which make check
# passes), so that make dev does not install a browser.
declare -A TEST_NEEDS=(
	# The race detector (go test -race) needs cgo: a C compiler and the C
	# library headers (make build does not: its binaries are CGO_ENABLED=0).
	# gcc only Recommends libc6-dev, and we install without recommends, so
	# the headers are listed on their own.
	[gcc]=gcc
	[/usr/include/stdio.h]=libc6-dev
	# The seed ISO tests read its volume label.
	[isoinfo]=genisoimage
	# The browser console's e2e test drives headless Chromium.
	[chromium]=chromium
	# deploy/'s test checks the systemd units with systemd-analyze verify
	# (systemd need not be PID 1); the release test reads packages with
	# dpkg-deb and installs them with dpkg in a throwaway overlay.
	[systemd-analyze]=systemd
	[dpkg-deb]=dpkg
	# The volume driver tests (nodeagent/volumes) make throwaway loop-mounted
	# xfs (reflink=1) and btrfs filesystems; the btrfs driver itself uses
	# ioctls, not btrfs-progs.
	[mkfs.xfs]=xfsprogs
	[mkfs.btrfs]=btrfs-progs
)

# Go is not a Debian package here: the project pins a newer toolchain than
# Debian ships, so it must already be installed in /usr/local/go.
GO_DIRS=/usr/local/go/bin

check_only=0
for arg in "$@"; do
	case "$arg" in
		--check) check_only=1 ;;
		--test)
			for need in "${!TEST_NEEDS[@]}"; do
				NEEDS[$need]=${TEST_NEEDS[$need]}
			done
			;;
		-h | --help)
			sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
			exit 0
			;;
		*)
			echo "install-deps: unknown argument: $arg (try --help)" >&2
			exit 2
			;;
	esac
done

have() {
	if [[ $1 == /* ]]; then
		[[ -e $1 ]]
	else
		command -v "$1" >/dev/null 2>&1
	fi
}

# missing_packages prints the sorted, de-duplicated packages whose check
# fails, one per line.
missing_packages() {
	local need
	for need in "${!NEEDS[@]}"; do
		if ! have "$need"; then
			echo "${NEEDS[$need]}"
		fi
	done | sort -u
}

status=0

# QEMU runs as this unprivileged system user (otherix-agent serve
# --qemu-user); the agent refuses to start QEMU as root in its place.
QEMU_USER=otherix-qemu

# ensure_qemu_user creates the QEMU user (root only) and lets it use KVM
# through the kvm group where the host has one.
ensure_qemu_user() {
	if ! id -u "$QEMU_USER" >/dev/null 2>&1; then
		if ((check_only)) || ((EUID != 0)); then
			echo "install-deps: user $QEMU_USER is missing: run as root to create it, or: useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $QEMU_USER" >&2
			return 1
		fi
		useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$QEMU_USER"
		echo "install-deps: created system user $QEMU_USER"
	fi
	if getent group kvm >/dev/null && ! id -nG "$QEMU_USER" | tr ' ' '\n' | grep -qx kvm; then
		if ((check_only)) || ((EUID != 0)); then
			echo "install-deps: $QEMU_USER is not in group kvm (usermod -aG kvm $QEMU_USER)" >&2
			return 1
		fi
		usermod -aG kvm "$QEMU_USER"
	fi
	echo "install-deps: ok: user $QEMU_USER"
}

export PATH="$GO_DIRS:$PATH"
if have go; then
	echo "install-deps: ok: go ($(go version | awk '{print $3}') at $(command -v go))"
else
	echo "install-deps: go is missing: install Go 1.26 into /usr/local/go (https://go.dev/dl/); this script does not download it" >&2
	status=1
fi

mapfile -t missing < <(missing_packages)

if ((${#missing[@]} == 0)); then
	echo "install-deps: ok: ${!NEEDS[*]}"
	ensure_qemu_user || status=1
	exit "$status"
fi

if ((check_only)); then
	echo "install-deps: missing Debian packages: ${missing[*]}" >&2
	exit 1
fi

if ((EUID != 0)); then
	echo "install-deps: missing Debian packages: ${missing[*]}" >&2
	echo "install-deps: run as root to install them (sudo $0), or: apt-get install -y --no-install-recommends ${missing[*]}" >&2
	exit 1
fi

if ! have apt-get; then
	echo "install-deps: apt-get not found; install these packages by hand: ${missing[*]}" >&2
	exit 1
fi

echo "install-deps: installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"

# Trust the checks, not apt's exit status: a package can install and still
# not provide what we looked for (a renamed binary, another PATH).
mapfile -t still < <(missing_packages)
if ((${#still[@]} > 0)); then
	echo "install-deps: still missing after install: ${still[*]}" >&2
	exit 1
fi
echo "install-deps: ok: ${!NEEDS[*]}"
ensure_qemu_user || status=1
exit "$status"
