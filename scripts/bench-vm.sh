#!/usr/bin/env bash
# bench-vm.sh: VM create→running on this host (issue #5), side by side —
# the floor (qemu-img + QEMU until QMP says running), libvirt (`virsh create`)
# and Otherix (API and CLI) — then `otherix vm list` against `virsh list`.
#
# libvirt is a benchmark-only dependency: as root this script installs
# Debian's libvirt-daemon-system if it is missing and starts virtlogd and
# libvirtd itself (no systemd here), stopping them by pid when it ends.
# Without root the libvirt part is skipped, and said so.
#
# Usage: scripts/bench-vm.sh [flags of go run ./test/bench/vm, e.g. -n 20 -rounds 3]
# BIN_DIR (default bin) holds the binaries of `make build`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
BIN_DIR=${BIN_DIR:-bin}

libvirt=true
started_pids=()
cleanup() {
	# Only the daemons this script started, by the pid they wrote.
	for pid in "${started_pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
	echo "bench-vm: not root: the libvirt comparison is SKIPPED (it needs libvirtd as root)"
	libvirt=false
elif ! command -v libvirtd >/dev/null || ! command -v virsh >/dev/null; then
	echo "bench-vm: installing libvirt-daemon-system libvirt-clients (benchmark-only dependency)"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libvirt-daemon-system libvirt-clients >/tmp/bench-vm-apt.log 2>&1; then
		echo "bench-vm: apt-get install failed (see /tmp/bench-vm-apt.log): the libvirt comparison is SKIPPED"
		libvirt=false
	fi
fi

# start_daemon NAME: runs NAME -d unless one is already running (per its pid
# file), and remembers the pid of one it started.
start_daemon() {
	local name=$1 pidfile=/run/$1.pid
	if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		echo "bench-vm: $name already running (pid $(cat "$pidfile")), using it"
		return
	fi
	"$name" -d
	for _ in $(seq 100); do
		[ -s "$pidfile" ] && break
		sleep 0.05
	done
	started_pids+=("$(cat "$pidfile")")
	echo "bench-vm: started $name (pid $(cat "$pidfile"))"
}

if $libvirt; then
	# libvirt runs QEMU as libvirt-qemu (group kvm). Without udev, /dev/kvm
	# stays root-only; give it the group and mode Debian's udev rule gives it.
	if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ] && getent group kvm >/dev/null; then
		echo "bench-vm: /dev/kvm is $(stat -c '%U:%G %a' /dev/kvm); setting root:kvm 660 as udev would"
		chgrp kvm /dev/kvm
		chmod 660 /dev/kvm
	fi
	start_daemon virtlogd
	start_daemon libvirtd
	for _ in $(seq 100); do
		virsh -c qemu:///system version >/dev/null 2>&1 && break
		sleep 0.1
	done
fi

echo "bench-vm: $(uptime)"
echo "bench-vm: go run ./test/bench/vm -bin $BIN_DIR -libvirt=$libvirt $*"
go run ./test/bench/vm -bin "$BIN_DIR" -libvirt="$libvirt" "$@"
echo "bench-vm: $(uptime)"
