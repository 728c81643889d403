#!/usr/bin/env bash
# Boot and stop test VMs made from the image of tests/vm/build-image.sh.
# Used by the shared Molecule create/destroy playbooks (molecule/shared/) and by hand.
#
#   vm.sh image                      build the image if its recipe changed; print its dir
#   vm.sh accel                      print kvm or tcg: kvm only if it really runs a guest here
#   vm.sh start NAME STATEDIR        boot NAME from a fresh qcow2 overlay in STATEDIR/NAME;
#                                    prints one JSON line {name, address, port, user, ...}
#   vm.sh wait NAME STATEDIR [SECS]  wait until root can log in over ssh (default 300 s)
#   vm.sh ssh NAME STATEDIR [CMD..]  ssh into NAME as root (for debugging)
#   vm.sh stop NAME STATEDIR         stop NAME and delete its overlay and state
#
# Each VM: user-mode networking with restrict=on (no traffic leaves the guest) and one
# forward, 127.0.0.1:<free port> -> guest :22; serial console in STATEDIR/NAME/console.log.
# Environment: NETSTACK_VM_ACCEL (auto|kvm|tcg, default auto), NETSTACK_VM_MEMORY (MiB,
# default 1024), NETSTACK_VM_CPUS (default 2), NETSTACK_VM_CACHE (default .cache/vm).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${NETSTACK_VM_CACHE:-$root/.cache/vm}
key="$cache/ssh/id_ed25519"
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          -o LogLevel=ERROR -o IdentitiesOnly=yes -o ConnectTimeout=5 -i "$key")

die() { echo "vm.sh: $*" >&2; exit 1; }

# KVM counts as working only when a guest really runs on it: /dev/kvm must open and a
# one-sector guest started with -accel kvm must write to the isa-debug-exit port, which
# makes QEMU exit with (0x41 << 1) | 1 = 131.  Anything else (no device, EPERM, a hang,
# an error from QEMU) means TCG.  The result is cached for the life of this boot.
accel() {
  case "${NETSTACK_VM_ACCEL:-auto}" in
    kvm|tcg) echo "$NETSTACK_VM_ACCEL"; return ;;
  esac
  local memo=/run/netstack-vm-accel
  if [ -s "$memo" ]; then cat "$memo"; return; fi
  local result=tcg probe rc
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    probe=$(mktemp)
    python3 - "$probe" <<'EOF'
import sys
code = bytes([0xB0, 0x41, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])  # mov al,0x41; out 0xf4,al; hlt
open(sys.argv[1], "wb").write(code + b"\0" * (510 - len(code)) + b"\x55\xaa")
EOF
    rc=0
    timeout 20 qemu-system-x86_64 -accel kvm -machine pc -m 16 -display none -nodefaults \
      -monitor none -serial none -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
      -drive file="$probe",format=raw,if=floppy >/dev/null 2>&1 || rc=$?
    rm -f "$probe"
    [ "$rc" = 131 ] && result=kvm
  fi
  echo "$result" > "$memo" 2>/dev/null || true
  echo "$result"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

image_dir() {
  [ -e "$cache/current/rootfs.qcow2" ] || die "no image: run tests/vm/build-image.sh"
  readlink -f "$cache/current"
}

start() {
  local name=$1 statedir=$2 img dir accel port cpu try
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad VM name '$name'"
  img=$(image_dir)
  dir="$statedir/$name"
  if [ -s "$dir/qemu.pid" ] && kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null; then
    die "$name is already running (pid $(cat "$dir/qemu.pid"))"
  fi
  rm -rf "$dir"; mkdir -p "$dir"
  qemu-img create -q -f qcow2 -F qcow2 -b "$img/rootfs.qcow2" "$dir/disk.qcow2"
  accel=$(accel)
  if [ "$accel" = kvm ]; then cpu=host; else cpu=max; fi
  for try in 1 2 3; do
    port=$(free_port)
    if qemu-system-x86_64 \
        -name "$name" -machine q35 -accel "$accel" -cpu "$cpu" \
        -smp "${NETSTACK_VM_CPUS:-2}" -m "${NETSTACK_VM_MEMORY:-1024}" \
        -nodefaults -display none -no-reboot \
        -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
        -append "console=ttyS0 root=/dev/vda rw net.ifnames=0 systemd.hostname=$name panic=-1 quiet" \
        -drive file="$dir/disk.qcow2",if=virtio,format=qcow2,cache=unsafe,discard=unmap \
        -netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:"$port"-:22 \
        -device virtio-net-pci,netdev=net0 \
        -device virtio-rng-pci \
        -serial file:"$dir/console.log" -monitor none \
        -pidfile "$dir/qemu.pid" -daemonize 2>"$dir/qemu.err"; then
      break
    fi
    grep -q 'Could not set up host forwarding' "$dir/qemu.err" || { cat "$dir/qemu.err" >&2; die "qemu failed for $name"; }
    port=""
  done
  [ -n "$port" ] || die "no free port for $name"
  echo "$port" > "$dir/port"
  echo "$accel" > "$dir/accel"
  date +%s.%N > "$dir/started"
  printf '{"name": "%s", "address": "127.0.0.1", "port": %s, "user": "root", "identity_file": "%s", "pid": %s, "accel": "%s", "console": "%s", "kernel": "%s"}\n' \
    "$name" "$port" "$key" "$(cat "$dir/qemu.pid")" "$accel" "$dir/console.log" "$(cat "$img/kernel-release")"
}

wait_ssh() {
  local name=$1 statedir=$2 limit=${3:-300} dir port start now
  dir="$statedir/$name"
  port=$(cat "$dir/port" 2>/dev/null) || die "$name was not started"
  start=$(cat "$dir/started")
  while :; do
    kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null || { tail -n 30 "$dir/console.log" >&2; die "$name: qemu exited"; }
    if ssh "${ssh_opts[@]}" -p "$port" root@127.0.0.1 true 2>/dev/null; then
      now=$(date +%s.%N)
      awk -v a="$start" -v b="$now" -v n="$name" 'BEGIN { printf "%s: ssh up %.1f s after start\n", n, b - a }' | tee "$dir/boot-time"
      return 0
    fi
    now=$(date +%s)
    if [ $(( now - ${start%.*} )) -ge "$limit" ]; then
      tail -n 30 "$dir/console.log" >&2
      die "$name: no ssh after ${limit}s (console: $dir/console.log)"
    fi
    sleep 1
  done
}

stop() {
  local name=$1 statedir=$2 dir pid i
  dir="$statedir/$name"
  [ -d "$dir" ] || return 0
  if [ -s "$dir/qemu.pid" ]; then
    pid=$(cat "$dir/qemu.pid")
    # Only signal the pid if it is still this VM's qemu (pids are reused).
    if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-name $name "; then
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$dir"
  rmdir "$statedir" 2>/dev/null || true
}

cmd=${1:-}; shift || true
case "$cmd" in
  image) "$here/build-image.sh" ;;
  accel) accel ;;
  start) [ $# -eq 2 ] || die "usage: vm.sh start NAME STATEDIR"; start "$@" ;;
  wait)  [ $# -ge 2 ] || die "usage: vm.sh wait NAME STATEDIR [SECS]"; wait_ssh "$@" ;;
  stop)  [ $# -eq 2 ] || die "usage: vm.sh stop NAME STATEDIR"; stop "$@" ;;
  ssh)   [ $# -ge 2 ] || die "usage: vm.sh ssh NAME STATEDIR [CMD...]"
         name=$1 statedir=$2; shift 2
         exec ssh "${ssh_opts[@]}" -p "$(cat "$statedir/$name/port")" root@127.0.0.1 "$@" ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
