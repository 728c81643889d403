"""`make test`: every suite, in two lanes, with a timing table at the end and the leftover check.

    .venv/bin/python tests/support/suite.py            everything (what .ci/run runs)
    .venv/bin/python tests/support/suite.py --list     the stages, lane by lane
    .venv/bin/python tests/support/suite.py unit lint  only these stages (prefixes match:
                                                       "molecule" = every scenario)

Lanes.  The Molecule guests run under software emulation (TCG) and spend most of their wall
time in guest code and in Ansible's round trips, while the host stages (unit, sanity, lint,
packaging, integration, lab) mostly run on this machine's own kernel; on 2 CPUs the two
lanes side by side take the time of the longer one plus the contention, where one after the
other they took the sum.  Within a lane stages run in order; a failed stage does not stop
the others (the table shows every result), the suite fails at the end.

The machine is snapshotted before the first stage (tests/support/machine_state.py) and
compared after the last: anything a suite left behind fails the run, named.  Before the
snapshot, what a killed earlier run left behind of the suite's own (the test lab, the
headers fallback of a dead test process) is removed and named: a session or CI job cut off
in the middle of the lab stage must not fail the next run.  The timing
table goes to stdout and to tests/output/timings.md (the last one is quoted in
docs/testing.md, so growth shows the day it happens).
"""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
OUT = REPO / "tests" / "output"
DEBIAN_PY = "/usr/bin/python3"


def molecule_scenarios():
    out = []
    for f in sorted((REPO / "molecule").glob("*/molecule.yml")):
        if not (f.parent / "UNVERIFIED").exists():
            out.append(f.parent.name)
    # the longest first: the lane's tail is then the short ones
    order = ["amp_partition", "shm_path", "tcp_tuning", "sysctl_profile", "bcc_runtime"]
    return sorted(out, key=lambda s: order.index(s) if s in order else len(order))


def integration_targets():
    out = []
    for d in sorted((REPO / "tests" / "integration" / "targets").iterdir()):
        aliases = d / "aliases"
        if aliases.exists() and "disabled" in aliases.read_text().split():
            continue
        out.append(d.name)
    return out


def stages():
    """(lane, name, argv) in run order."""
    py = str(VENV_BIN / "python")
    host = [("unit", [py, "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider", "--durations=8"]),
            ("sanity", ["make", "--no-print-directory", "sanity"]),
            ("lint", ["make", "--no-print-directory", "lint"]),
            ("packaging", [py, "-m", "pytest", "tests/packaging", "-q", "-p", "no:cacheprovider", "--durations=8"])]
    host += [("integration/" + t, ["tests/integration/run.sh", t]) for t in integration_targets()]
    host += [("integration/pytest", [py, "-m", "pytest", "tests/integration/pytest", "-q", "-p", "no:cacheprovider", "--durations=8"]),
             ("integration/shm", [DEBIAN_PY, "-m", "pytest", "tests/integration/shm", "-q", "-rxX", "-p", "no:cacheprovider", "--durations=8"]),
             ("integration/traffic", [DEBIAN_PY, "-m", "pytest", "tests/integration/traffic", "-q", "-p", "no:cacheprovider", "--durations=8"]),
             ("lab-test", [py, "-m", "pytest", "tests/lab", "-q", "-p", "no:cacheprovider", "--durations=8"])]
    # the image (cached by recipe) and the booted templates of both VM shapes the scenarios use
    vm = [("image", ["bash", "-c", "set -e; bash tests/vm/build-image.sh; bash tests/vm/vm.sh template 2 1024;"
                                   " bash tests/vm/vm.sh template 4 1024"])]
    vm += [("molecule/" + s, [str(VENV_BIN / "molecule"), "test", "-s", s]) for s in molecule_scenarios()]
    return [("host", n, a) for n, a in host] + [("vm", n, a) for n, a in vm]


class Result(object):
    def __init__(self, lane, name):
        self.lane, self.name = lane, name
        self.status, self.seconds, self.start = "not run", None, None


def run_lane(items, results, logdir, lock):
    for lane, name, argv in items:
        r = results[name]
        log = logdir / (name.replace("/", "__") + ".log")
        r.start = time.monotonic()
        with lock:
            print("[%s] %-28s started" % (lane, name), flush=True)
        with open(log, "w") as f:
            p = subprocess.run(argv, cwd=str(REPO), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        r.seconds = time.monotonic() - r.start
        r.status = "passed" if p.returncode == 0 else "FAILED"
        with lock:
            print("[%s] %-28s %s in %.0f s" % (lane, name, r.status, r.seconds), flush=True)
            if p.returncode != 0:
                tail = log.read_text(errors="replace").splitlines()[-60:]
                print("---- last lines of %s\n%s\n----" % (log, "\n".join(tail)), flush=True)


def fmt(s):
    return "-" if s is None else "%d:%02d" % (int(s) // 60, int(s) % 60)


def table(results, total, leftover):
    lanes = {}
    for r in results.values():
        lanes.setdefault(r.lane, []).append(r)
    lines = ["| lane | stage | result | wall (m:ss) |", "|---|---|---|---|"]
    for lane in ("host", "vm"):
        rs = lanes.get(lane, [])
        for r in rs:
            lines.append("| %s | %s | %s | %s |" % (lane, r.name, r.status, fmt(r.seconds)))
        if rs:
            lines.append("| %s | **lane total** | | %s |" % (lane, fmt(sum(r.seconds or 0 for r in rs))))
    lines.append("| | leftover check | %s | |" % leftover)
    lines.append("| | **make test (wall)** | | **%s** |" % fmt(total))
    return "\n".join(lines)


def recover_killed_run():
    sys.path.insert(0, str(REPO / "tests" / "support"))
    import lab_names
    import machine_headers
    undone = ["test lab: %s" % ", ".join(found) for found in [lab_names.remove_stale()] if found]
    return undone + machine_headers.recover()


def main(argv):
    all_stages = stages()
    if argv[:1] == ["--list"]:
        for lane, name, argv_ in all_stages:
            print("%-5s %-28s %s" % (lane, name, " ".join(argv_)))
        return 0
    chosen = [s for s in all_stages if not argv or any(s[1] == a or s[1].startswith(a + "/") for a in argv)]
    if not chosen:
        print("suite: no stage matches %s (--list shows them)" % " ".join(argv))
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    logdir = OUT / "suite-logs"
    logdir.mkdir(exist_ok=True)
    os.environ["PATH"] = str(VENV_BIN) + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    for line in recover_killed_run():
        print("suite: removed what an interrupted earlier run left: %s" % line)
    snap = OUT / "machine-before.json"
    state_py = [DEBIAN_PY, str(REPO / "tests" / "support" / "machine_state.py")]
    subprocess.run(state_py + ["snapshot", str(snap)], check=True)

    results = {n: Result(l, n) for l, n, _a in chosen}
    lock = threading.Lock()
    t0 = time.monotonic()
    threads = [threading.Thread(target=run_lane, args=([s for s in chosen if s[0] == lane], results, logdir, lock))
               for lane in ("host", "vm")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.monotonic() - t0

    chk = subprocess.run(state_py + ["compare", str(snap)], capture_output=True, text=True)
    print(chk.stdout + chk.stderr, end="")
    leftover = "passed" if chk.returncode == 0 else "FAILED"
    text = table(results, total, leftover)
    print("\n" + text)
    (OUT / "timings.md").write_text(text + "\n")
    failed = [r.name for r in results.values() if r.status != "passed"]
    print("suite: %d passed, %d failed" % (len(results) - len(failed), len(failed)))
    if failed or chk.returncode != 0:
        print("make test: FAILED: %s" % ", ".join(failed + (["leftover check"] if chk.returncode else [])))
        return 1
    print("make test: all suites passed, nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
