#!/usr/bin/env bash
# Boot and stop test VMs made from the image of tests/vm/build-image.sh.
# Used by the shared Molecule create/destroy playbooks (molecule/shared/) and by hand.
#
#   vm.sh image                      build the image if its recipe changed; print its dir
#   vm.sh accel                      print kvm or tcg: kvm only if it really runs a guest here
#   vm.sh start NAME STATEDIR        boot NAME from a fresh qcow2 overlay in STATEDIR/NAME;
#                                    prints one JSON line {instance, address, port, user,
#                                    identity_file, pid, accel, kernel, console}
#   vm.sh wait NAME STATEDIR [SECS]  wait until root can log in over ssh (default 300 s)
#   vm.sh ssh NAME STATEDIR [CMD..]  ssh into NAME as root (for debugging)
#   vm.sh stop NAME STATEDIR         stop NAME and delete its overlay and state
#
# Each VM: user-mode networking with restrict=on (no traffic leaves the guest) and one
# forward, 127.0.0.1:<free port> -> guest :22; serial console in STATEDIR/NAME/console.log.
# Environment: NETSTACK_VM_ACCEL (auto|kvm|tcg, default auto), NETSTACK_VM_MEMORY (MiB,
# default 1024), NETSTACK_VM_CPUS (default 2), NETSTACK_VM_CACHE (default .cache/vm),
# NETSTACK_VM_EXTRA_ARGS (extra QEMU arguments appended to the command line, split on
# whitespace, no quoting or globbing; e.g. an ivshmem-plain device; default none).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${NETSTACK_VM_CACHE:-$root/.cache/vm}
key="$cache/ssh/id_ed25519"
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          -o LogLevel=ERROR -o IdentitiesOnly=yes -o ConnectTimeout=5 -i "$key")

die() { echo "vm.sh: $*" >&2; exit 1; }

# KVM counts as working only when a Linux guest really boots on it: /dev/kvm must open
# and the image's own kernel, started with -accel kvm -cpu host and no init to run, must
# get as far as its "No working init found" panic (QEMU then exits, -no-reboot) within
# 20 s.  Hosts where /dev/kvm exists but a guest cannot run (nested virtualization
# without the CPU support, MSRs the host refuses) fall back to TCG.  The answer is kept
# in /run for the life of this host boot.
accel() {
  case "${NETSTACK_VM_ACCEL:-auto}" in
    kvm|tcg) echo "$NETSTACK_VM_ACCEL"; return ;;
  esac
  local memo=/run/netstack-vm-accel
  if [ -s "$memo" ]; then cat "$memo"; return; fi
  local result=tcg img log
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    img=$(image_dir)
    log=$(mktemp)
    ( timeout 20 qemu-system-x86_64 -accel kvm -cpu host -machine pc -m 256 -smp 1 \
      -nodefaults -display none -no-reboot -monitor none -serial file:"$log" \
      -kernel "$img/vmlinuz" -append "console=ttyS0 panic=-1 rdinit=/none init=/none" \
      >/dev/null 2>&1 || true ) 2>/dev/null   # (quiet even when qemu aborts)
    grep -q 'Kernel panic' "$log" && result=kvm
    rm -f "$log"
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
  local name=$1 statedir=$2 img dir accel port cpu try extra=()
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
  read -r -a extra <<< "${NETSTACK_VM_EXTRA_ARGS:-}"
  # The guest may reboot itself (QEMU resets it); a kernel panic reboots after 10 s.
  # cache=unsafe: the overlay is thrown away with the VM, so host flushes buy nothing.
  for try in 1 2 3; do
    port=$(free_port)
    if qemu-system-x86_64 \
        -name "$name" -machine pc -accel "$accel" -cpu "$cpu" \
        -smp "${NETSTACK_VM_CPUS:-2}" -m "${NETSTACK_VM_MEMORY:-1024}" \
        -nodefaults -display none \
        -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
        -append "console=ttyS0 root=/dev/vda rw net.ifnames=0 systemd.hostname=$name panic=10 mitigations=off quiet" \
        -drive file="$dir/disk.qcow2",if=virtio,format=qcow2,cache=unsafe,discard=unmap \
        -netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:"$port"-:22 \
        -device virtio-net-pci,netdev=net0 \
        -device virtio-rng-pci \
        -serial file:"$dir/console.log" -monitor none \
        -pidfile "$dir/qemu.pid" -daemonize "${extra[@]}" 2>"$dir/qemu.err"; then
      break
    fi
    grep -q 'Could not set up host forwarding' "$dir/qemu.err" || { cat "$dir/qemu.err" >&2; die "qemu failed for $name"; }
    port=""
  done
  [ -n "$port" ] || die "no free port for $name"
  echo "$port" > "$dir/port"
  echo "$accel" > "$dir/accel"
  date +%s.%N > "$dir/started"
  printf '{"instance": "%s", "address": "127.0.0.1", "port": %s, "user": "root", "identity_file": "%s", "pid": %s, "accel": "%s", "console": "%s", "kernel": "%s"}\n' \
    "$name" "$port" "$key" "$(cat "$dir/qemu.pid")" "$accel" "$dir/console.log" "$(cat "$img/kernel-release")"
}

# Wait for the guest's sshd banner on the forwarded port (QEMU accepts the host side of
# the forward at once, so a plain ssh attempt would hang until the guest answers), then
# log in once as root to prove the key works.
wait_ssh() {
  local name=$1 statedir=$2 limit=${3:-300} dir port
  dir="$statedir/$name"
  port=$(cat "$dir/port" 2>/dev/null) || die "$name was not started"
  if ! python3 - "$port" "$limit" "$(cat "$dir/qemu.pid")" "$(cat "$dir/started")" <<'EOF'
import os, socket, sys, time
port, limit, pid, started = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
while time.time() - started < limit:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("qemu exited")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(1)
            if s.recv(4).startswith(b"SSH-"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.3)
sys.exit("no ssh banner after %ds" % limit)
EOF
  then
    tail -n 30 "$dir/console.log" >&2
    die "$name did not come up (console: $dir/console.log)"
  fi
  ssh "${ssh_opts[@]}" -p "$port" root@127.0.0.1 true || die "$name: ssh login as root failed"
  awk -v a="$(cat "$dir/started")" -v b="$(date +%s.%N)" -v n="$name" \
    'BEGIN { printf "%s: ssh up %.1f s after start\n", n, b - a }' | tee "$dir/boot-time"
}

stop() {
  local name=$1 statedir=$2 dir pid i
  dir="$statedir/$name"
  [ -d "$dir" ] || return 0
  if [ -s "$dir/qemu.pid" ]; then
    pid=$(cat "$dir/qemu.pid")
    # Only signal the pid if it is still this VM's qemu (pids are reused).
    if tr "\\0" " " 2>/dev/null < "/proc/$pid/cmdline" | grep -q -- "-name $name "; then
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
  image) bash "$here/build-image.sh" ;;
  accel) accel ;;
  start) [ $# -eq 2 ] || die "usage: vm.sh start NAME STATEDIR"; start "$@" ;;
  wait)  [ $# -ge 2 ] || die "usage: vm.sh wait NAME STATEDIR [SECS]"; wait_ssh "$@" ;;
  stop)  [ $# -eq 2 ] || die "usage: vm.sh stop NAME STATEDIR"; stop "$@" ;;
  ssh)   [ $# -ge 2 ] || die "usage: vm.sh ssh NAME STATEDIR [CMD...]"
         name=$1 statedir=$2; shift 2
         exec ssh "${ssh_opts[@]}" -p "$(cat "$statedir/$name/port")" root@127.0.0.1 "$@" ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
