#!/bin/bash
# build.sh OUTDIR: build OUTDIR/guest.qcow2, a small bootable test guest shaped
# like a cloud image (MBR + one FAT partition with syslinux, the Debian cloud
# kernel and a busybox initramfs that reads a NoCloud seed; see init/rcS).
#
# Everything comes from Debian packages: busybox-static syslinux syslinux-common
# mtools dosfstools fdisk cpio qemu-utils, plus the kernel package behind
# linux-image-cloud-amd64, fetched with `apt-get download` (no root needed) and
# unpacked with dpkg-deb (not installed). No loop devices, no mounts.
#
# Cached: when OUTDIR/guest.qcow2 exists and OUTDIR/stamp matches the hash of
# this script, init/*, the busybox binary and the kernel package version, it
# exits 0 at once. The image is built in a temporary directory inside OUTDIR
# and renamed into place. Concurrent callers must serialize themselves (the Go
# helper in guest.go holds a flock on OUTDIR/lock).
set -euo pipefail

die() { echo "build.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: build.sh OUTDIR"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)

# Kernel modules the guest loads (their dependencies are added automatically).
# pvpanic_mmio drives QEMU's ISA pvpanic device (found through ACPI), so a
# kernel panic reaches QEMU as GUEST_PANICKED; pvpanic_pci is the PCI one.
modules=(virtio_pci virtio_blk virtio_net virtio_scsi sd_mod sr_mod cdrom isofs
	ata_piix button evdev pvpanic_mmio pvpanic_pci)
# Module parameters: scan SCSI buses synchronously so that the seed's device
# exists when insmod returns.
declare -A modparams=([scsi_mod]="scan=sync")

busybox=/bin/busybox
mbr=/usr/lib/syslinux/mbr/mbr.bin

# --- tools -----------------------------------------------------------------
missing=()
need() { # need TOOL PACKAGE
	command -v "$1" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1 ||
		missing+=("$1 (package $2)")
}
need apt-get apt
need apt-cache apt
need dpkg-deb dpkg
need syslinux syslinux
need mcopy mtools
need mkfs.fat dosfstools
need sfdisk fdisk
need cpio cpio
need gzip gzip
need qemu-img qemu-utils
need sha256sum coreutils
[ -x "$busybox" ] || missing+=("$busybox (package busybox-static)")
[ -f "$mbr" ] || missing+=("$mbr (package syslinux-common)")
if [ ${#missing[@]} -gt 0 ]; then
	die "missing tools: ${missing[*]}; install them with: apt-get install -y busybox-static syslinux syslinux-common mtools dosfstools fdisk cpio qemu-utils"
fi
export PATH="$PATH:/usr/sbin:/sbin"
if command -v dpkg-query >/dev/null 2>&1 &&
	[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" != "install ok installed" ]; then
	die "$busybox is not from busybox-static (a static busybox is needed as the guest's init): apt-get install -y busybox-static"
fi

# --- cache check -------------------------------------------------------------
# The kernel package behind linux-image-cloud-amd64 and its version. apt-cache
# takes ~1 s here (no pkgcache.bin), so the answer is kept in OUTDIR/kernel
# and reused while the apt lists are unchanged.
listsig=$(stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* 2>/dev/null | sha256sum | cut -d' ' -f1)
kpkg= kver=
if [ -f "$out/kernel" ]; then
	read -r sig kpkg kver < "$out/kernel" || true
	[ "$sig" = "$listsig" ] || kpkg= kver=
fi
if [ -z "$kpkg" ] || [ -z "$kver" ]; then
	# "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)"
	read -r kpkg kver < <(apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null |
		sed -n 's/^Depends: *\(linux-image-[^ ,]*\) *(= *\([^)]*\)).*/\1 \2/p' | head -n 1) || true
	[ -n "$kpkg" ] && [ -n "$kver" ] ||
		die "cannot resolve linux-image-cloud-amd64 to a kernel package and version (apt-cache show); run apt-get update"
	echo "$listsig $kpkg $kver" > "$out/kernel"
fi

stamp=$(
	cd "$here"
	{
		sha256sum build.sh init/*
		echo "busybox $(sha256sum < "$busybox")"
		echo "kernel $kpkg $kver"
	} | sha256sum | cut -d' ' -f1
)
if [ -f "$out/guest.qcow2" ] && [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ]; then
	exit 0
fi

# --- build -----------------------------------------------------------------
tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "build.sh: building test guest ($kpkg $kver) in $tmp"

# Kernel package: kept in OUTDIR/debs so a change to the guest files does not
# download it again.
mkdir -p "$out/debs"
deb=$(ls "$out/debs/${kpkg}"_*.deb 2>/dev/null | head -n 1) || true
debkey="$out/debs/$kpkg.version"
if [ -z "$deb" ] || [ ! -f "$debkey" ] || [ "$(cat "$debkey")" != "$kver" ]; then
	rm -f "$out/debs/"*.deb "$debkey"
	aptopts=()
	# As root apt wants to drop to _apt, which cannot write to our temp dir.
	[ "$(id -u)" = 0 ] && aptopts=(-o APT::Sandbox::User=root)
	(cd "$tmp" && apt-get download -q "${aptopts[@]}" "$kpkg=$kver") >&2 ||
		die "apt-get download $kpkg=$kver failed"
	for f in "$tmp/${kpkg}"_*.deb; do
		[ -f "$f" ] || die "apt-get download produced no .deb for $kpkg"
		mv "$f" "$out/debs/"
		deb="$out/debs/$(basename "$f")"
	done
	echo "$kver" > "$debkey"
fi
dpkg-deb -x "$deb" "$tmp/kpkg"
kvmlinuz=$(ls "$tmp/kpkg/boot/"vmlinuz-* 2>/dev/null | head -n 1)
[ -n "$kvmlinuz" ] || die "no vmlinuz in $deb"
krel=${kvmlinuz##*/vmlinuz-}
moddir="$tmp/kpkg/lib/modules/$krel"
[ -d "$moddir/kernel" ] || die "no modules for $krel in $deb"

# Initramfs tree.
root="$tmp/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,etc/acpi/PWRF,lib/modules,proc,sys,dev,run,tmp,root,mnt/seed,var/log,var/run}
cp "$busybox" "$root/bin/busybox"
"$busybox" --list-full | while read -r applet; do
	[ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
ln -s bin/busybox "$root/init"
install -m 0644 "$here/init/inittab" "$root/etc/inittab"
install -m 0644 "$here/init/profile" "$root/etc/profile"
install -m 0755 "$here/init/rcS" "$root/etc/init.d/rcS"
install -m 0755 "$here/init/userdata" "$root/etc/init.d/userdata"
install -m 0755 "$here/init/network" "$root/etc/init.d/network"
install -m 0755 "$here/init/shutdown" "$root/etc/init.d/shutdown"
install -m 0755 "$here/init/acpi-power" "$root/etc/acpi/PWRF/00000080"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

# Modules: resolve depends= (from each .ko's .modinfo section, NUL-separated
# strings) depth-first so that every module follows its dependencies.
declare -A modpath=() seen=()
while IFS= read -r f; do
	n=${f##*/}
	n=${n%.ko}
	modpath[${n//-/_}]=$f
done < <(find "$moddir/kernel" -name '*.ko')
builtin=$(sed 's|.*/||; s|\.ko$||; s|-|_|g' "$moddir/modules.builtin" 2>/dev/null || true)
order=()
visit() {
	local m=${1//-/_} f deps d deplist
	[ -n "$m" ] || return 0
	[ -z "${seen[$m]:-}" ] || return 0
	seen[$m]=1
	f=${modpath[$m]:-}
	if [ -z "$f" ]; then
		grep -qx "$m" <<< "$builtin" && return 0
		die "kernel module $m not found in $deb"
	fi
	deps=$(tr '\0' '\n' < "$f" | { grep -a '^depends=' || true; } | head -n 1 | cut -d= -f2)
	IFS=, read -ra deplist <<< "$deps"
	for d in "${deplist[@]}"; do
		visit "$d"
	done
	order+=("$m")
}
for m in "${modules[@]}"; do
	visit "$m"
done
: > "$root/etc/modules"
for m in "${order[@]}"; do
	cp "${modpath[$m]}" "$root/lib/modules/$m.ko"
	echo "$m ${modparams[$m]:-}" >> "$root/etc/modules"
done

(cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9n > "$tmp/initrd.gz"

# Boot partition: FAT16 with syslinux, at 1 MiB of the disk.
cat > "$tmp/syslinux.cfg" <<'EOF'
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 quiet
EOF
cp "$kvmlinuz" "$tmp/vmlinuz"
payload=$(( $(stat -c %s "$tmp/vmlinuz") + $(stat -c %s "$tmp/initrd.gz") ))
partmib=$(( payload / 1048576 + 8 ))
[ "$partmib" -ge 17 ] || partmib=17 # FAT16 wants some room
mkfs.fat -F 16 -n OTHERIX -h 2048 -C "$tmp/part.img" $((partmib * 1024)) > /dev/null
syslinux --install "$tmp/part.img"
mcopy -i "$tmp/part.img" "$tmp/syslinux.cfg" "$tmp/vmlinuz" "$tmp/initrd.gz" ::/

# Disk: MBR (syslinux mbr.bin) + one bootable FAT16 (LBA) partition.
truncate -s $(( (partmib + 1) * 1048576 )) "$tmp/disk.raw"
printf 'label: dos\nstart=2048, type=e, bootable\n' | sfdisk --quiet "$tmp/disk.raw"
dd if="$mbr" of="$tmp/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$tmp/part.img" of="$tmp/disk.raw" bs=1M seek=1 conv=notrunc status=none
qemu-img convert -c -f raw -O qcow2 "$tmp/disk.raw" "$tmp/guest.qcow2"

rm -f "$out/stamp"
mv -f "$tmp/guest.qcow2" "$out/guest.qcow2"
echo "$stamp" > "$tmp/stamp"
mv -f "$tmp/stamp" "$out/stamp"
echo "build.sh: built $out/guest.qcow2 ($(stat -c %s "$out/guest.qcow2") bytes; modules: ${order[*]})"
