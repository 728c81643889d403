#!/usr/bin/env bash
# Run integration targets (ansible-test layout: tests/integration/targets/<name>/tasks/main.yml)
# against this machine's real kernel over the local connection, with Debian's python
# (the interpreter that sees python3-bpfcc).  Usage: tests/integration/run.sh [target ...]
# With no argument every target runs.  Targets clean up after themselves (always: blocks).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
export ANSIBLE_CONFIG="$root/ansible.cfg"
[ -x "$root/.venv/bin/ansible-playbook" ] && PATH="$root/.venv/bin:$PATH"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for d in "$here"/targets/*/; do
    t=$(basename "$d")
    [ -f "$d/aliases" ] && grep -qx 'disabled' "$d/aliases" && continue
    targets+=("$t")
  done
fi
read -r -a extra <<< "${ANSIBLE_EXTRA_ARGS:-}"  # e.g. ANSIBLE_EXTRA_ARGS="-vv"
fail=0; passed=0; failed=0
for t in "${targets[@]}"; do
  echo "=== integration target: $t"
  start=$(date +%s)
  if ansible-playbook -i "$root/tests/integration/inventory.yml" "$here/target.yml" -e "netstack_target=$t" "${extra[@]}"; then
    echo "=== $t: PASSED in $(( $(date +%s) - start ))s"; passed=$((passed+1))
  else
    echo "=== $t: FAILED in $(( $(date +%s) - start ))s"; failed=$((failed+1)); fail=1
  fi
done
echo "integration: $passed passed, $failed failed"
exit $fail
