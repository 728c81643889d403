#!/usr/bin/env bash
# Boot and stop test VMs made from the image of tests/vm/build-image.sh.
# Used by the shared Molecule create/destroy playbooks (molecule/shared/) and by hand.
#
#   vm.sh image                      build the image if its recipe changed; print its dir
#   vm.sh accel                      print kvm or tcg: kvm only if it really runs a guest here
#   vm.sh start NAME STATEDIR        start NAME from a fresh qcow2 overlay in STATEDIR/NAME
#                                    (restored from the booted template of its shape, see
#                                    below); prints one JSON line {instance, address, port,
#                                    user, identity_file, pid, accel, kernel, console, restored}
#   vm.sh template [CPUS [MIB]]      make the booted template of that shape now (default 2 1024)
#   vm.sh wait NAME STATEDIR [SECS]  wait until root can log in over ssh (default 300 s)
#   vm.sh ssh NAME STATEDIR [CMD..]  ssh into NAME as root (for debugging)
#   vm.sh stop NAME STATEDIR         stop NAME and delete its overlay and state
#
# Each VM: user-mode networking with restrict=on (no traffic leaves the guest) and one
# forward, 127.0.0.1:<free port> -> guest :22; serial console in STATEDIR/NAME/console.log.
# Environment: NETSTACK_VM_ACCEL (auto|kvm|tcg, default auto), NETSTACK_VM_MEMORY (MiB,
# default 1024), NETSTACK_VM_CPUS (default 2), NETSTACK_VM_CACHE (default .cache/vm),
# NETSTACK_VM_EXTRA_ARGS (extra QEMU arguments appended to the command line, split on
# whitespace, no quoting or globbing; e.g. an ivshmem-plain device; default none),
# NETSTACK_VM_SNAPSHOT (1: start from a booted template, the default; 0: a cold boot).
#
# Booted templates.  A cold boot under TCG costs 16-60 s of CPU (kernel, systemd), once per
# VM.  Instead, the first VM of a shape (vCPUs, memory) boots once into a template: the
# guest is booted until systemd says startup is over, paused, and its RAM and device state
# saved through QEMU's migration stream next to a frozen qcow2 layer of its disk
# (<image>/booted/<cpus>c-<mib>m/{disk.qcow2,state}).  Every VM of that shape then starts
# from its own overlay on that layer with -incoming: the same guest, a second after it
# finished booting.  Right after the restore, vm.sh fixes what must differ per VM and per
# start over ssh: the hostname (NAME, as systemd.hostname= gives a cold boot), the wall
# clock (the guest's clock would otherwise resume at the template's time) and fresh bytes
# mixed into the guest's random pool.  The template belongs to the image: a new image makes
# new templates.  VMs with NETSTACK_VM_EXTRA_ARGS always boot cold (other devices).
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

qemu_run() {   # qemu_run NAME DIR DISK PORT ACCEL [more QEMU args]: start QEMU, daemonized
  local name=$1 dir=$2 disk=$3 port=$4 accel=$5 cpu
  shift 5
  if [ "$accel" = kvm ]; then cpu=host; else cpu=max; fi
  # The guest may reboot itself (QEMU resets it); a kernel panic reboots after 10 s.
  # cache=unsafe: the overlay is thrown away with the VM, so host flushes buy nothing.
  qemu-system-x86_64 \
    -name "$name" -machine pc -accel "$accel" -cpu "$cpu" \
    -smp "${NETSTACK_VM_CPUS:-2}" -m "${NETSTACK_VM_MEMORY:-1024}" \
    -nodefaults -display none \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw net.ifnames=0 systemd.hostname=$name panic=10 mitigations=off quiet" \
    -drive file="$disk",if=virtio,format=qcow2,cache=unsafe,discard=unmap \
    -netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:"$port"-:22 \
    -device virtio-net-pci,netdev=net0 \
    -device virtio-rng-pci \
    -serial file:"$dir/console.log" \
    -pidfile "$dir/qemu.pid" -daemonize "$@" 2>"$dir/qemu.err"
}

# hmp SOCKET COMMAND...: human-monitor commands to a QEMU; prints the answers
hmp() {
  python3 - "$@" <<'PYEOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(120)
def until_prompt():
    buf = b""
    while not buf.endswith(b"(qemu) "):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.decode("utf-8", "replace")
until_prompt()
for cmd in sys.argv[2:]:
    s.sendall(cmd.encode() + b"\n")
    print(until_prompt())
PYEOF
}

# template CPUS MIB: the booted template of that shape, made once (under a lock) and then
# reused; prints its directory.
template() {
  local cpus=$1 mem=$2 tpl port i out accel t0
  img=$(image_dir)
  tpl="$img/booted/${cpus}c-${mem}m"
  exec 8>"$img/.booted.lock"
  flock 8
  if [ -s "$tpl/state" ] && [ -s "$tpl/disk.qcow2" ]; then echo "$tpl"; return; fi
  t0=$(date +%s)
  rm -rf "$tpl"; mkdir -p "$tpl"
  accel=$(accel)
  qemu-img create -q -f qcow2 -F qcow2 -b "$img/rootfs.qcow2" "$tpl/disk.qcow2"
  port=$(free_port)
  echo "$port" > "$tpl/port"; date +%s.%N > "$tpl/started"
  NETSTACK_VM_CPUS=$cpus NETSTACK_VM_MEMORY=$mem \
    qemu_run netstack-template "$tpl" "$tpl/disk.qcow2" "$port" "$accel" \
      -monitor unix:"$tpl/monitor.sock",server=on,wait=off \
    || { cat "$tpl/qemu.err" >&2; rm -rf "$tpl"; die "qemu failed for the template ${cpus}c-${mem}m"; }
  if ! wait_banner "$tpl" 600 || ! ssh "${ssh_opts[@]}" -p "$port" root@127.0.0.1 \
        'systemctl is-system-running --wait >/dev/null; sync'; then
    kill "$(cat "$tpl/qemu.pid")" 2>/dev/null; tail -n 30 "$tpl/console.log" >&2; rm -rf "$tpl"
    die "the template ${cpus}c-${mem}m did not come up"
  fi
  # Write RAM and device state into the migration stream (a live migration: the guest is
  # left running so that the restored copies run too; QEMU stops it for the last pass and
  # flushes its disk), then quit.  The disk layer is frozen at that instant.
  hmp "$tpl/monitor.sock" "migrate \"exec:cat > $tpl/state.part\"" >/dev/null
  for i in $(seq 1200); do
    out=$(hmp "$tpl/monitor.sock" "info migrate")
    grep -q 'Migration status: completed' <<<"$out" && break
    if grep -qE 'Migration status: (failed|cancelled)' <<<"$out" || [ "$i" = 1200 ]; then
      hmp "$tpl/monitor.sock" quit >/dev/null 2>&1; rm -rf "$tpl"; die "saving the template failed: $out"
    fi
    sleep 0.1
  done
  hmp "$tpl/monitor.sock" quit >/dev/null 2>&1 || true
  for i in $(seq 50); do kill -0 "$(cat "$tpl/qemu.pid" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
  mv "$tpl/state.part" "$tpl/state"
  rm -f "$tpl/monitor.sock" "$tpl/qemu.pid" "$tpl/port" "$tpl/started"
  echo "vm.sh: template ${cpus}c-${mem}m booted and saved in $(( $(date +%s) - t0 )) s" >&2
  echo "$tpl"
}

start() {
  local name=$1 statedir=$2 dir accel port try extra=() tpl="" ok
  mkdir -p "$statedir"; statedir=$(cd "$statedir" && pwd)   # absolute: stop matches the disk path
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad VM name '$name'"
  img=$(image_dir)
  dir="$statedir/$name"
  if [ -s "$dir/qemu.pid" ] && kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null; then
    die "$name is already running (pid $(cat "$dir/qemu.pid"))"
  fi
  rm -rf "$dir"; mkdir -p "$dir"
  accel=$(accel)
  read -r -a extra <<< "${NETSTACK_VM_EXTRA_ARGS:-}"
  if [ "${NETSTACK_VM_SNAPSHOT:-1}" = 1 ] && [ ${#extra[@]} -eq 0 ]; then
    tpl=$(template "${NETSTACK_VM_CPUS:-2}" "${NETSTACK_VM_MEMORY:-1024}")
    qemu-img create -q -f qcow2 -F qcow2 -b "$tpl/disk.qcow2" "$dir/disk.qcow2"
    : > "$dir/restored"
  else
    qemu-img create -q -f qcow2 -F qcow2 -b "$img/rootfs.qcow2" "$dir/disk.qcow2"
  fi
  for try in 1 2 3; do
    port=$(free_port)
    if [ -n "$tpl" ]; then
      # the template's machine, kernel line included (QEMU restores exactly what was saved)
      qemu_run netstack-template "$dir" "$dir/disk.qcow2" "$port" "$accel" -monitor none \
        -incoming "exec:cat $tpl/state" && ok=1 || ok=0
    else
      qemu_run "$name" "$dir" "$dir/disk.qcow2" "$port" "$accel" -monitor none "${extra[@]}" && ok=1 || ok=0
    fi
    [ "$ok" = 1 ] && break
    grep -q 'Could not set up host forwarding' "$dir/qemu.err" || { cat "$dir/qemu.err" >&2; die "qemu failed for $name"; }
    port=""
  done
  [ -n "$port" ] || die "no free port for $name"
  echo "$port" > "$dir/port"
  echo "$accel" > "$dir/accel"
  date +%s.%N > "$dir/started"
  printf '{"instance": "%s", "address": "127.0.0.1", "port": %s, "user": "root", "identity_file": "%s", "pid": %s, "accel": "%s", "console": "%s", "kernel": "%s", "restored": %s}\n' \
    "$name" "$port" "$key" "$(cat "$dir/qemu.pid")" "$accel" "$dir/console.log" "$(cat "$img/kernel-release")" \
    "$([ -n "$tpl" ] && echo true || echo false)"
}

# Wait for the guest's sshd banner on the forwarded port (QEMU accepts the host side of
# the forward at once, so a plain ssh attempt would hang until the guest answers).
wait_banner() {   # wait_banner DIR LIMIT
  local dir=$1 limit=$2
  python3 - "$(cat "$dir/port")" "$limit" "$(cat "$dir/qemu.pid")" "$(cat "$dir/started")" <<'EOF'
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
}

# One login; on a restored VM it also gives the guest its own hostname, the host's wall
# clock and fresh random bytes.
fixup_or_login() {   # fixup_or_login NAME DIR PORT
  local name=$1 dir=$2 port=$3
  if [ -e "$dir/restored" ]; then
    head -c 512 /dev/urandom | ssh -o ConnectTimeout=30 "${ssh_opts[@]}" -p "$port" root@127.0.0.1 \
      "cat > /dev/urandom && date -s @$(date +%s.%N) >/dev/null && hostname '$name'"
  else
    ssh -o ConnectTimeout=30 "${ssh_opts[@]}" -p "$port" root@127.0.0.1 true
  fi
}

# Wait until root can log in with the key.  A VM restored from a template then gets its own
# hostname, the host's wall clock and fresh random bytes (see the header).
wait_ssh() {
  local name=$1 statedir=$2 limit=${3:-300} dir port how="cold boot"
  dir="$statedir/$name"
  port=$(cat "$dir/port" 2>/dev/null) || die "$name was not started"
  if ! wait_banner "$dir" "$limit"; then
    tail -n 30 "$dir/console.log" >&2
    die "$name did not come up (console: $dir/console.log)"
  fi
  # A guest just restored (or booted) under software emulation on a busy host can stall
  # for seconds after its first banner; ssh's 5 s ConnectTimeout then ends in "Connection
  # timed out during banner exchange" (suite run 9, beside a CPU hog). The login here waits
  # 30 s (ssh takes the first ConnectTimeout given) and is retried, 5 times at most, while
  # the wait's limit lasts.
  local tries=0 what="ssh login as root"
  [ -e "$dir/restored" ] && how="restored from the booted template" && what="$what, or the fixup after the restore,"
  until fixup_or_login "$name" "$dir" "$port"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 5 ] || ! awk -v a="$(cat "$dir/started")" -v b="$(date +%s)" -v l="$limit" \
        'BEGIN { exit !(b - a < l) }'; then
      die "$name: $what failed"
    fi
    echo "vm.sh: $name: $what failed (attempt $tries); trying again" >&2
    sleep 2
  done
  awk -v a="$(cat "$dir/started")" -v b="$(date +%s.%N)" -v n="$name" -v how="$how" \
    'BEGIN { printf "%s: ssh up %.1f s after start (%s)\n", n, b - a, how }' | tee "$dir/boot-time"
}

stop() {
  local name=$1 statedir=$2 dir pid i
  [ -d "$statedir" ] && statedir=$(cd "$statedir" && pwd)   # as start wrote it into the command line
  dir="$statedir/$name"
  [ -d "$dir" ] || return 0
  if [ -s "$dir/qemu.pid" ]; then
    pid=$(cat "$dir/qemu.pid")
    # Only signal the pid if it is still this VM's qemu (pids are reused): its command line
    # names it (a cold boot) or its own disk (restored from a template)
    if tr "\\0" " " 2>/dev/null < "/proc/$pid/cmdline" | grep -q -e "-name $name " -e "file=$dir/disk.qcow2,"; then
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
  template) template "${1:-2}" "${2:-1024}" ;;
  accel) accel ;;
  start) [ $# -eq 2 ] || die "usage: vm.sh start NAME STATEDIR"; start "$@" ;;
  wait)  [ $# -ge 2 ] || die "usage: vm.sh wait NAME STATEDIR [SECS]"; wait_ssh "$@" ;;
  stop)  [ $# -eq 2 ] || die "usage: vm.sh stop NAME STATEDIR"; stop "$@" ;;
  ssh)   [ $# -ge 2 ] || die "usage: vm.sh ssh NAME STATEDIR [CMD...]"
         name=$1 statedir=$2; shift 2
         exec ssh "${ssh_opts[@]}" -p "$(cat "$statedir/$name/port")" root@127.0.0.1 "$@" ;;
  *) sed -n '2,40p' "$0"; exit 2 ;;
esac
