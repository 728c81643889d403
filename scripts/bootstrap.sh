#!/usr/bin/env bash
# Install what netstack.tuning needs on a fresh Debian 12 machine, from the package
# registries only: Debian packages (apt) and a Python virtualenv (.venv, PyPI).
#   scripts/bootstrap.sh demo   what the main job needs (`make demo`)
#   scripts/bootstrap.sh        that and what the tests and benchmarks need (`make setup`,
#                               `make test`, `.ci/run`): servers and clients, QEMU, a browser
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# The main job: BPF (bcc, bpftool), namespaces, the C helpers, nginx and wrk for the study.
APT_PKGS=(
  python3 python3-venv python3-jsonschema python3-bpfcc bpfcc-tools python3-pyroute2
  iproute2 iputils-ping procps kmod git make gcc bpftool nginx wrk
)
if [ "${1:-all}" != demo ]; then
  # Tests and benchmarks: the lab's SSH hosts, the third-party clients and servers, the
  # Molecule VMs (QEMU, mmdebstrap), the browser that renders the reports.
  APT_PKGS+=(
    openssh-client openssh-server rsync shellcheck python3-pytest
    redis-server postgresql sockperf iperf3 stress-ng irqbalance
    qemu-system-x86 qemu-utils mmdebstrap busybox-static cpio xz-utils chromium-headless-shell
  )
fi
# linux-headers-amd64 is what the bcc_runtime role's documented fallback links when the
# running kernel has no headers package of its own (see roles/bcc_runtime/README.md).
if [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ]; then APT_PKGS+=(linux-headers-amd64); fi

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
  # Debian starts nginx/redis on install where an init system runs; tests start their own.
  for s in nginx redis-server; do service "$s" stop >/dev/null 2>&1 || true; done
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: pip install -r requirements-dev.txt"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  echo "$want" > $stamp
fi
echo "bootstrap: ok"
