#!/usr/bin/env bash
# Run Molecule scenarios one after another (on 2 cores, parallel VMs only slow each
# other down) and print how long each took.  Used by `make molecule`.
#   tests/vm/run-molecule.sh                 every scenario under molecule/
#   tests/vm/run-molecule.sh sysctl_profile  just these
# Builds the VM image first (cached: a few ms when the recipe is unchanged), so the first
# scenario's time is not skewed by the build.  Exit status: 0 only if every scenario passed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1
[ -x .venv/bin/molecule ] && export PATH="$root/.venv/bin:$PATH"
command -v molecule >/dev/null || { echo "run-molecule: molecule not found (make setup)" >&2; exit 1; }

scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
  # A scenario with an UNVERIFIED file (why, inside) runs only when named explicitly.
  for f in molecule/*/molecule.yml; do
    [ -e "$(dirname "$f")/UNVERIFIED" ] && { echo "run-molecule: skipping $(dirname "$f") (UNVERIFIED)"; continue; }
    scenarios+=("$(basename "$(dirname "$f")")")
  done
fi

t0=$(date +%s)
bash tests/vm/build-image.sh >/dev/null || { echo "run-molecule: image build failed" >&2; exit 1; }
echo "run-molecule: image ready in $(( $(date +%s) - t0 )) s; accel $(bash tests/vm/vm.sh accel)"

results=(); failed=0
for s in "${scenarios[@]}"; do
  echo "=== molecule test -s $s"
  start=$(date +%s)
  if molecule test -s "$s"; then r=passed; else r=FAILED; failed=$((failed + 1)); fi
  results+=("$(printf '%-24s %-7s %4d s' "$s" "$r" $(( $(date +%s) - start )))")
done
echo "=== molecule summary (total $(( $(date +%s) - t0 )) s)"
printf '  %s\n' "${results[@]}"
[ $failed -eq 0 ]
