#!/usr/bin/env bash
# Build the Debian 12 test-VM image from the package registries only (no cloud image):
#   rootfs   mmdebstrap (variant apt + the include list below) -> ext4 (mke2fs -d) -> qcow2
#   kernel   Debian's linux-image-6.1.0-*-amd64 (installed in the rootfs, with the
#            matching linux-headers so bcc compiles against exact headers)
#   initrd   a small busybox initramfs made here: insmod virtio/ext4 modules, switch_root
# The result is cached under .cache/vm/<key>/ where <key> hashes this recipe (this file,
# initramfs-init, guest/* and the injected ssh public key); a second run with an unchanged recipe
# only prints the path.  Downloaded .debs are kept in .cache/vm/debs/ so a rebuild after a
# recipe change does not download them again.
#
# Usage: tests/vm/build-image.sh [--force] [--print-key]
# Output (stdout, last line): the image directory, holding
#   rootfs.qcow2  vmlinuz  initrd.img  kernel-release  manifest.txt  build.log
# and .cache/vm/current -> <key>, .cache/vm/ssh/id_ed25519{,.pub} (root's login key).
# Needs root (mmdebstrap --mode=root), mmdebstrap, busybox-static, cpio, e2fsprogs,
# qemu-utils, openssh-client, python3 (see scripts/bootstrap.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${NETSTACK_VM_CACHE:-$root/.cache/vm}
suite=bookworm

# What the guest gets.  Changing this list changes the cache key (it is in this file).
packages=(
  systemd systemd-sysv udev dbus
  openssh-server python3 python3-apt python3-jsonschema python3-pyroute2
  iproute2 procps kmod iputils-ping ethtool
  python3-bpfcc bpfcc-tools bpftool
  linux-image-amd64 linux-headers-amd64
  nginx redis-server
)
disk_size=${NETSTACK_VM_DISK_SIZE:-6G}   # sparse; the qcow2 only holds what is used

log() { echo "build-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

force=0; print_key=0
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    --print-key) print_key=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument $a" ;;
  esac
done

mkdir -p "$cache/ssh" "$cache/debs"
# The cache never belongs in git, whatever the top-level .gitignore says.
[ -f "$cache/.gitignore" ] || echo '*' > "$cache/.gitignore"
# The login key lives outside the image directory: one key for every image build.
if [ ! -s "$cache/ssh/id_ed25519" ]; then
  ssh-keygen -q -t ed25519 -N '' -C netstack-test-vm -f "$cache/ssh/id_ed25519"
fi
key=$(cat "$0" "$here/initramfs-init" "$here"/guest/* "$cache/ssh/id_ed25519.pub" | sha256sum | cut -c1-16)
if [ $print_key = 1 ]; then echo "$key"; exit 0; fi
out="$cache/$key"

# One build at a time (two scenarios started together share one build).
exec 9>"$cache/.lock"
flock 9

if [ $force = 0 ] && [ -s "$out/rootfs.qcow2" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
  ln -sfn "$key" "$cache/current"
  log "cached image $out"
  echo "$out"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root, mke2fs -d of a root-owned tree)"
for tool in mmdebstrap mke2fs qemu-img cpio python3; do
  command -v "$tool" >/dev/null || die "$tool not found (run scripts/bootstrap.sh)"
done
busybox=$(command -v busybox || true)
# ldd fails on a static binary: that is the busybox the initramfs needs.
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  die "a static busybox is needed (apt-get install busybox-static)"
fi

# The Debian mirrors the host's apt uses (deb822 or one-line sources); deb.debian.org otherwise.
mirror=$(grep -rhoE '(URIs:|deb)[[:space:]]+https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
           /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
         | awk '{print $2}' | head -n1 || true)
mirror=${NETSTACK_VM_MIRROR:-${mirror:-http://deb.debian.org/debian}}
mirror=${mirror%/}
security=$(grep -rhoE '(URIs:|deb)[[:space:]]+https?://[^[:space:]]+/debian-security/?([[:space:]]|$)' \
             /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
           | awk '{print $2}' | head -n1 || true)
security=${NETSTACK_VM_SECURITY_MIRROR:-${security:-http://deb.debian.org/debian-security}}
security=${security%/}

start=$(date +%s.%N)
tmp="$cache/tmp.$key.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
rootdir="$tmp/root"
blog="$tmp/build.log"
log "building image $key from $mirror ($suite) into $out (log: $blog while building)"

# update-initramfs is diverted to a no-op: the guest boots our own busybox initramfs and a
# Debian initramfs would only cost build time.  dpkg path filters keep docs/man/locales out.
if ! mmdebstrap --mode=root --variant=apt --format=directory \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in '$cache/debs' /var/cache/apt/archives/" \
    --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
    --essential-hook='printf "#!/bin/sh\n# netstack test VM: the initramfs is built outside the guest\nexit 0\n" > "$1"/usr/sbin/update-initramfs; chmod 755 "$1"/usr/sbin/update-initramfs' \
    --customize-hook="sync-out /var/cache/apt/archives '$cache/debs'" \
    "$suite" "$rootdir" \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb $security $suite-security main" >"$blog" 2>&1; then
  cp "$blog" "$cache/build-failed.log"
  tail -n 40 "$blog" >&2
  die "mmdebstrap failed (full log: $cache/build-failed.log)"
fi
find "$cache/debs" -name '*.deb' -mtime +30 -delete 2>/dev/null || true
t_debootstrap=$(date +%s.%N)

# ---- guest configuration -------------------------------------------------------------
kver=$(basename "$(ls -d "$rootdir"/lib/modules/*-amd64 | sort -V | tail -n1)")
[ -f "$rootdir/boot/vmlinuz-$kver" ] || die "no kernel in the rootfs"
[ -d "$rootdir/usr/src/linux-headers-$kver" ] || die "linux-headers-$kver missing in the rootfs"

: > "$rootdir/etc/resolv.conf"                 # no network beyond the forwarded ssh port
echo netstack-vm > "$rootdir/etc/hostname"     # create.yml sets systemd.hostname= per VM
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$rootdir/etc/hosts"
# A fixed machine-id: an empty one makes systemd run first-boot presets, which would
# re-enable the services disabled below.
echo "$key$key" > "$rootdir/etc/machine-id"
echo '# root is mounted read-write by the initramfs' > "$rootdir/etc/fstab"

install -d -m 700 "$rootdir/root/.ssh"
install -m 600 "$cache/ssh/id_ed25519.pub" "$rootdir/root/.ssh/authorized_keys"
cat > "$rootdir/etc/ssh/sshd_config.d/netstack-test.conf" <<'EOF'
# netstack test VM: root logs in with the generated key only.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF

# QEMU user-mode networking: the guest is always 10.0.2.15, the host side 10.0.2.2.
# A oneshot unit rather than systemd-networkd: networkd waits for udev, which costs
# seconds under software emulation, and eth0 already exists (the initramfs loads
# virtio_net; net.ifnames=0 keeps the name).
cat > "$rootdir/etc/systemd/system/netstack-eth0.service" <<'EOF'
[Unit]
Description=netstack test VM: static address on eth0 (QEMU user-mode network)
DefaultDependencies=no
After=local-fs.target
Before=network.target ssh.service
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip link set lo up
ExecStart=/sbin/ip link set eth0 up
ExecStart=/sbin/ip addr replace 10.0.2.15/24 dev eth0
ExecStart=/sbin/ip route replace default via 10.0.2.2 dev eth0

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$rootdir/etc/systemd/system.conf.d"
cat > "$rootdir/etc/systemd/system.conf.d/netstack-test.conf" <<'EOF'
[Manager]
DefaultTimeoutStartSec=30s
DefaultTimeoutStopSec=10s
EOF
chroot "$rootdir" systemctl enable --quiet netstack-eth0.service
# Not needed in a throwaway test VM, and each costs seconds under software emulation.
chroot "$rootdir" systemctl mask --quiet \
  systemd-networkd.service systemd-networkd-wait-online.service systemd-binfmt.service \
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
  fstrim.timer getty@tty1.service \
  systemd-timesyncd.service 2>/dev/null || true
# Speed only (see the file): bytecode cache for Ansible's zip-imported module_utils.
install -m 644 "$here/guest/netstack_zipimport_cache.py" "$rootdir/usr/lib/python3/dist-packages/"
echo 'import netstack_zipimport_cache' > "$rootdir/usr/lib/python3/dist-packages/netstack_zipimport_cache.pth"
# Roles start these when they need them (the guest boots faster without them).
chroot "$rootdir" systemctl disable --quiet nginx.service redis-server.service

# ---- initramfs -----------------------------------------------------------------------
ird="$tmp/initramfs"
mkdir -p "$ird/bin" "$ird/lib/modules"
cp "$busybox" "$ird/bin/busybox"
install -m 755 "$here/initramfs-init" "$ird/init"
python3 - "$rootdir/lib/modules/$kver" "$ird" virtio_pci virtio_blk virtio_net crc32c_generic ext4 <<'EOF'
# Resolve the wanted modules and their dependencies (modules.dep) into load order;
# copy them (decompressed) into the initramfs and write /modules.list.
import lzma, os, shutil, sys
moddir, ird, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
deps, byname = {}, {}
with open(os.path.join(moddir, "modules.dep")) as f:
    for line in f:
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        name = os.path.basename(path).split(".ko")[0].replace("-", "_")
        byname[name] = path
builtin = set()
if os.path.exists(os.path.join(moddir, "modules.builtin")):
    with open(os.path.join(moddir, "modules.builtin")) as f:
        builtin = {os.path.basename(l.strip()).split(".ko")[0].replace("-", "_") for l in f}
order = []
def visit(path):
    if path in order:
        return
    for d in deps[path]:
        visit(d)
    order.append(path)
for w in wanted:
    if w in byname:
        visit(byname[w])
    elif w not in builtin:
        sys.exit("module %s is neither a module nor built in" % w)
with open(os.path.join(ird, "modules.list"), "w") as lst:
    for path in order:
        base = os.path.basename(path)
        dst = os.path.join(ird, "lib/modules", base.split(".ko")[0] + ".ko")
        src = os.path.join(moddir, path)
        if path.endswith(".xz"):
            with lzma.open(src) as i, open(dst, "wb") as o:
                shutil.copyfileobj(i, o)
        else:
            shutil.copyfile(src, dst)
        lst.write(os.path.basename(dst) + "\n")
EOF
(cd "$ird" && find . | cpio --quiet -o -H newc | gzip -1 > "$tmp/initrd.img")
cp "$rootdir/boot/vmlinuz-$kver" "$tmp/vmlinuz"
t_initrd=$(date +%s.%N)

# ---- root disk -----------------------------------------------------------------------
{
  echo "key: $key"
  echo "kernel-release: $kver"
  echo "mirror: $mirror $suite (+updates, security $security)"
  echo "built: $(date -u +%FT%TZ)"
  echo "packages:"
  chroot "$rootdir" dpkg-query -W -f='  ${Package} ${Version}\n'
} > "$tmp/manifest.txt"
echo "$kver" > "$tmp/kernel-release"
truncate -s "$disk_size" "$tmp/rootfs.raw"
mke2fs -q -F -t ext4 -L netstack-root -m 0 -E root_owner=0:0 -d "$rootdir" "$tmp/rootfs.raw"
qemu-img convert -f raw -O qcow2 "$tmp/rootfs.raw" "$tmp/rootfs.qcow2"
rm -f "$tmp/rootfs.raw"
rm -rf "$rootdir" "$ird"
end=$(date +%s.%N)
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "mmdebstrap $(secs "$start" "$t_debootstrap")s, initramfs $(secs "$t_debootstrap" "$t_initrd")s," \
  "disk $(secs "$t_initrd" "$end")s, total $(secs "$start" "$end")s" >> "$blog"
log "$(tail -n1 "$blog")"

# Publish atomically and drop older builds (each is ~1 GB).
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
ln -sfn "$key" "$cache/current"
for d in "$cache"/*/; do
  d=${d%/}; b=$(basename "$d")
  [ -L "$d" ] && continue
  case "$b" in ssh|debs|"$key") ;; *) [ -f "$d/manifest.txt" ] && rm -rf "$d" ;; esac
done
echo "$out"
