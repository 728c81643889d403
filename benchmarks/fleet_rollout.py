#!/usr/bin/env python3
"""Benchmark: a 20-sysctl profile plus one BPF capability rolled out over SSH to 1, 10 and
50 lab hosts, against the same sysctls through ansible.posix.sysctl, one task per key.

The hosts are the many-host lab (tests/lab/netns_lab.sh): each is a network namespace on
this machine with its own sshd, reached by ansible-playbook over real SSH with host keys
checked.  The lab runs under its own names (prefix nsbf, 198.18.0.0/16, state in
/run/netstack-lab-bench, inventory in a scratch directory) so it can run next to the lab
tests (nslabt, 198.19, /run/netstack-lab-pytest).

Arms (benchmarks/fleet/*.yml), run on the same lab and the same hosts:
  A  netstack: play 1 = ONE netstack.tuning.sysctl_set task with the 20-key PROFILE of
     benchmarks/sysctl_apply.py (runtime, state_dir = the host's netstack_state_dir);
     play 2 = the netstack.tuning.tcp_tuning role as shipped (so with its bcc_runtime
     dependency), one loopback rule, per host its own cgroup
     (netstack-bench/<host> under the cgroup v2 root), pin name (/sys/fs/bpf/netstack/<host>)
     and state dir.  bpf_program has no compile cache: every host compiles tcp_tuning.bpf.c
     with bcc itself.  bcc_runtime proves the toolchain once per host (package check,
     headers, smoke compile) and records the proof in the state dir; later runs check the
     record with one script and skip the rest.
  B  baseline: the same 20 keys with ansible.posix.sysctl, one task per key
     (sysctl_set: true, reload left at its default as in sysctl_apply.py, sysctl_file in
     the host's own state dir).

A lab host's sshd runs under `ip netns exec`, which gives it a private mount namespace with
a fresh /sys: no cgroup v2 hierarchy and no BPF filesystem, both of which a real host has.
The lab script mounts in each host's mount namespace the machine's cgroup v2 hierarchy at
/sys/fs/cgroup/unified (the same cgroups as here) and a BPF filesystem of the host's own on
/sys/fs/bpf, where its pins live; with a lab script that does not, this script mounts them
itself before measuring (untimed) and records that.

Every PROFILE key is a per-network-namespace net.* key, so each lab host changes its own
kernel values.  Before every apply run everything is put back, outside the timing: the
BPF program set is removed (benchmarks/fleet/reset.yml), the cgroups removed, the state
dirs emptied, and the 20 keys are written (ip netns exec ... sysctl -w) to a fresh
namespace's defaults, except tcp_sack and tcp_window_scaling, which a fresh namespace
already has at the profile's value 1 and which are set to 0, so every apply really
changes all 20 keys.  That is checked: arm A's journal entry holds 20 keys and its recap
says 4 changed tasks per host (sysctl_set, cgroup, program, rules); arm B's recap says 20.
The kernel values are read back in every namespace after every apply.  A no-op run (the
same playbook again, nothing may change: changed=0 asserted) follows the apply run of each
arm at the sizes in --noop-sizes.  There, arm A also gets a third run, "no-op, full bcc
pass": the same playbook once more after deleting each host's bcc proof record, which is
what every run cost before bcc_runtime kept that record (the package query, the header
stats and the smoke compile on every host); it changes one thing per host (the record).

The running kernel needs headers under /lib/modules/$(uname -r)/build for bcc (the lab
hosts share this machine's filesystem).  Where there are none, the bcc_runtime role's
documented fallback is applied once to this machine before measuring (untimed,
tests/lab/headers.yml, as the lab tests do) and removed afterwards, so lab hosts find
headers and never race to make the same links.

Arms are interleaved per repeat with alternating order.  Each ansible-playbook run gets its
own fresh ssh ControlPath directory (a cold start, as a real rollout has; connections are
reused within the run) and its masters are ended after it.  The same -f (forks) is used for
both arms and every size.  Per-task times come from ansible.posix.profile_tasks (enabled in
both arms), which splits A into its sysctl part and its BPF part.

Results: benchmarks/results/fleet_rollout.json (raw) and .md (medians, min-max, ratios,
per-host overhead).  --quick: sizes 1,3, one repeat, results to a scratch directory.
"""
import argparse
import glob
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, ".venv", "bin")
LAB = os.path.join(ROOT, "tests", "lab", "netns_lab.sh")
FLEET = os.path.join(HERE, "fleet")
sys.path.insert(0, HERE)
from sysctl_apply import PROFILE  # noqa: E402  the same 20 keys as the single-host benchmark
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
import machine_headers  # noqa: E402  bcc_runtime's headers fallback, as the lab tests make it

PREFIX = "nsbf"
NET = "198.18"
STATE = "/run/netstack-lab-bench"
CGROOT = "/sys/fs/cgroup/unified"
CGDIR = os.path.join(CGROOT, "netstack-bench")
PINROOT = "/sys/fs/bpf/netstack"
# Profile keys a fresh namespace already holds at the profile's value: flipped on reset.
FLIP = {"net.ipv4.tcp_sack": "0", "net.ipv4.tcp_window_scaling": "0"}
ARMS = ("netstack", "posix")
# sysctl_set, make cgroup, load+attach, write rules; and bcc_runtime's proof record (the
# reset empties the state dir, so every apply is a host's first)
A_CHANGED_PER_HOST = 5
BCC_RECORD = "bcc_runtime_ready.json"
B_CHANGED_PER_HOST = len(PROFILE)


def norm(v):
    return " ".join(str(v).split())


def hostname(i):
    return "%s-%03d" % (PREFIX, i)


class Lab(object):
    def __init__(self, scratch):
        self.inventory = os.path.join(scratch, "hosts.yml")
        self.env = dict(os.environ, NETSTACK_LAB_PREFIX=PREFIX, NETSTACK_LAB_NET=NET,
                        NETSTACK_LAB_STATE=STATE, NETSTACK_LAB_INVENTORY=self.inventory)
        self.n = 0

    def start(self, n):
        t0 = time.monotonic()
        subprocess.run([LAB, "start", str(n)], env=self.env, check=True, capture_output=True, text=True)
        self.n = n
        self.mounted = {h: self.give_sys_mounts(h) for h in self.hosts()}
        return time.monotonic() - t0

    def sshd_pid(self, host):
        with open(os.path.join(STATE, host, "sshd.pid")) as f:
            return int(f.read().strip())

    def root(self, host):
        """This machine's filesystem as the lab host's processes see it (its mount namespace)."""
        return "/proc/%d/root" % self.sshd_pid(host)

    def give_sys_mounts(self, host):
        """Make sure the lab host sees a cgroup v2 hierarchy and has a BPF filesystem.

        A lab host's sshd runs under `ip netns exec`, which gives it a mount namespace with
        a fresh /sys.  netns_lab.sh now mounts there what a real host has (its own bpffs,
        the machine's cgroup v2 hierarchy at /sys/fs/cgroup/unified); an older lab script
        did not, and then this does the same, outside any timing.  Returns what it mounted."""
        pid = self.sshd_pid(host)
        with open("/proc/%d/mounts" % pid) as f:
            mnt = [line.split()[1:3] for line in f]
        steps = []
        if not any(fs == "cgroup2" for _, fs in mnt):
            steps += ["mount -t tmpfs -o mode=755,size=64k cgroup /sys/fs/cgroup", "mkdir /sys/fs/cgroup/unified",
                      "mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified"]
        if ["/sys/fs/bpf", "bpf"] not in mnt:
            steps.append("mount -t bpf bpf /sys/fs/bpf")
        if steps:
            subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "sh", "-ec", " && ".join(steps)], check=True)
        with open("/proc/%d/mounts" % pid) as f:
            cg2 = [line.split()[1] for line in f if line.split()[2] == "cgroup2"]
        assert cg2 == [CGROOT], (host, "cgroup v2 mounts", cg2)
        return steps

    def stop(self):
        subprocess.run([LAB, "stop"], env=self.env, capture_output=True, text=True)
        self.n = 0

    def hosts(self):
        return [hostname(i) for i in range(1, self.n + 1)]

    def state_dir(self, host):
        return os.path.join(STATE, host, "state")


def read_ns(ns):
    out = subprocess.run(["ip", "netns", "exec", ns, "sysctl"] + list(PROFILE), capture_output=True,
                         text=True, check=True).stdout
    return {line.split(" = ")[0]: norm(line.split(" = ")[1]) for line in out.splitlines()}


def pins(lab=None):
    """Pin directories of this benchmark: on this machine's bpffs and on every lab host's own."""
    found = glob.glob(os.path.join(PINROOT, PREFIX + "-*"))
    for h in (lab.hosts() if lab else []):
        found += glob.glob(lab.root(h) + os.path.join(PINROOT, PREFIX + "-*"))
    return sorted(found)


def ssh_pids(ctl_dir):
    """ssh control masters started by one run (their command line names its ControlPath dir)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmd.startswith(("ssh ", "ssh:")) and ctl_dir in cmd:  # a master renames itself "ssh: <path> [mux]"
            found.append(int(pid))
    return found


TASK_LINE = re.compile(r"^(.+?)\s+-+\s*([0-9.]+)s\s*$")


def run_play(lab, play, forks, scratch, label):
    """One timed ansible-playbook run: (wall s, changed per host, {task: s}, output)."""
    ctl = tempfile.mkdtemp(prefix="cp-", dir=scratch)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_SSH_CONTROL_PATH_DIR=ctl,
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
               # every task in the summary (the callback's default is the 20 slowest), and wide
               # enough lines that every name is followed by its dashes and time
               PROFILE_TASKS_TASK_OUTPUT_LIMIT="all", COLUMNS="400")
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", lab.inventory, "-f", str(forks), play]
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    for pid in ssh_pids(ctl):  # end this run's control masters (ssh processes we started)
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    if p.returncode != 0:
        lines = p.stdout.splitlines()
        fatal = [ln for i, ln in enumerate(lines)
                 if any(("fatal:" in x or "FAILED!" in x or "[ERROR]" in x) for x in lines[max(0, i - 2):i + 12])]
        sys.exit("%s failed (rc %d):\n%s\n...\n%s\n%s" % (label, p.returncode, "\n".join(fatal[:200]),
                                                        p.stdout[-3000:], p.stderr[-3000:]))
    changed = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", line)
        if m:
            changed[m.group(1)] = int(m.group(2))
    tasks = {}
    summary = False
    for line in p.stdout.splitlines():
        if line.startswith("=" * 20):
            summary = True
            continue
        m = TASK_LINE.match(line)
        if summary and m:
            tasks[m.group(1).strip()] = tasks.get(m.group(1).strip(), 0.0) + float(m.group(2))
    return wall, changed, tasks, p.stdout


def split_tasks(tasks):
    """Arm A's task times in parts: sysctl_set, bcc_runtime (role dependency), tcp_tuning."""
    parts = {"sysctl": 0.0, "bcc_runtime": 0.0, "bcc_check": 0.0, "bcc_install": 0.0, "bcc_smoke": 0.0,
             "tcp_tuning": 0.0, "bpf_load": 0.0}
    for name, s in tasks.items():
        if "bcc_runtime :" in name:
            parts["bcc_runtime"] += s
            if "Check whether bcc was proven" in name:
                parts["bcc_check"] += s
            if "Install bcc" in name:
                parts["bcc_install"] += s
            if "Prove bcc compiles" in name:
                parts["bcc_smoke"] += s
        elif "tcp_tuning :" in name:
            parts["tcp_tuning"] += s
            if "Load and attach" in name:
                parts["bpf_load"] += s
        else:
            parts["sysctl"] += s
    parts["bpf"] = parts["bcc_runtime"] + parts["tcp_tuning"]
    return parts


class Resetter(object):
    def __init__(self, lab, scratch, forks, defaults):
        self.lab, self.scratch, self.forks = lab, scratch, forks
        self.fresh = dict(defaults)
        self.fresh.update(FLIP)
        for k, v in PROFILE.items():
            assert self.fresh[k] != norm(v), "reset value of %s equals the profile" % k

    def __call__(self):
        """Put every lab host back to before any arm ran (untimed)."""
        if pins(self.lab):
            run_play(self.lab, os.path.join(FLEET, "reset.yml"), self.forks, self.scratch, "reset.yml")
        left = pins(self.lab)
        assert not left, "pins left after reset.yml: %s" % left
        remove_cgroups()
        for h in self.lab.hosts():
            sd = self.lab.state_dir(h)
            shutil.rmtree(sd, ignore_errors=True)
            os.makedirs(sd, mode=0o700)  # as the journal makes it (a 0755 dir would be "changed")
            subprocess.run(["ip", "netns", "exec", h, "sysctl", "-q", "-w"]
                           + ["%s=%s" % (k, v) for k, v in self.fresh.items()], check=True)
        for h in self.lab.hosts()[:1] + self.lab.hosts()[-1:]:
            got = read_ns(h)
            assert got == self.fresh, (h, got)


def bcc_headers(scratch, state):
    """Apply (present) or remove (absent) bcc_runtime's headers fallback on this machine."""
    try:
        machine_headers.apply(state, os.path.join(scratch, "headers"))
    except RuntimeError as e:
        sys.exit("tests/lab/headers.yml: %s" % e)


def remove_cgroups():
    if os.path.isdir(CGDIR):
        for d in glob.glob(os.path.join(CGDIR, PREFIX + "-*")):
            os.rmdir(d)
        os.rmdir(CGDIR)


def verify_apply(lab, arm, changed):
    for h in lab.hosts():
        got = read_ns(h)
        for k, v in PROFILE.items():
            assert got[k] == norm(v), (arm, h, k, got[k], v)
        want = A_CHANGED_PER_HOST if arm == "netstack" else B_CHANGED_PER_HOST
        assert changed.get(h) == want, (arm, h, "changed tasks", changed.get(h), "expected", want)
        if arm == "netstack":
            keys = 0
            with open(os.path.join(lab.state_dir(h), "journal.jsonl")) as f:
                for line in f:
                    keys = max(keys, len(json.loads(line).get("items") or []))
            assert keys == len(PROFILE), (h, "journal keys", keys)
            assert os.path.exists(lab.root(h) + os.path.join(PINROOT, h, "progs", "tcp_tuner")), (h, "no pin")
            out = subprocess.run(["bpftool", "cgroup", "show", os.path.join(CGDIR, h)],
                                 capture_output=True, text=True).stdout
            assert "sock_ops" in out, (h, "tcp_tuner not attached", out)
        else:
            assert os.path.exists(os.path.join(lab.state_dir(h), "posix-sysctl.conf"))


def host_values():
    out = subprocess.run(["sysctl"] + list(PROFILE), capture_output=True, text=True, check=True).stdout
    return {line.split(" = ")[0]: norm(line.split(" = ")[1]) for line in out.splitlines()}


def leftovers():
    left = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left += ["netns " + ln.split()[0] for ln in netns.splitlines() if ln.startswith(PREFIX + "-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    left += ["link " + ln.split(": ")[1].split("@")[0] for ln in links.splitlines()
             if ln.split(": ")[1].startswith(PREFIX)]
    left += ["pin " + p for p in pins()]
    if os.path.exists(CGDIR):
        left.append("cgroup " + CGDIR)
    if os.path.exists(STATE):
        left.append(STATE)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if STATE in cmd:
            left.append("process %s: %s" % (pid, cmd.strip()))
    return left


def stats(xs):
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
            "samples": [round(x, 3) for x in xs]}


def check_playbooks():
    """The playbooks must hold exactly PROFILE (they are static files; the profile lives here)."""
    import yaml
    a = yaml.safe_load(open(os.path.join(FLEET, "netstack.yml")))
    tasks = a[0]["tasks"]
    assert len(tasks) == 1
    assert {k: norm(v) for k, v in tasks[0]["netstack.tuning.sysctl_set"]["sysctls"].items()} == \
        {k: norm(v) for k, v in PROFILE.items()}
    b = yaml.safe_load(open(os.path.join(FLEET, "posix.yml")))
    got = {t["ansible.posix.sysctl"]["name"]: norm(t["ansible.posix.sysctl"]["value"]) for t in b[0]["tasks"]}
    assert len(b[0]["tasks"]) == len(PROFILE) and got == {k: norm(v) for k, v in PROFILE.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,10,50", help="lab sizes (hosts), comma-separated")
    ap.add_argument("--repeats", default="5,5,3",
                    help="repeats: one number for every size, or one per size (default 5,5,3)")
    ap.add_argument("--noop-sizes", default="1,10", help="sizes at which each apply is followed by a no-op run")
    ap.add_argument("--forks", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="smoke run: sizes 1,3, one repeat, results to a scratch dir")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .md (into --out) from a results JSON")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            res = json.load(f)
        meta = {k: v for k, v in res.items() if k not in ("summary", "per_host_overhead_s", "runs")}
        write_results(meta, res["runs"], res["sizes"], args.out)
        return
    if args.quick:
        args.sizes, args.repeats, args.noop_sizes = "1,3", "1", "1,3"
        args.out = tempfile.mkdtemp(prefix="fleet-quick-")
    sizes = [int(s) for s in args.sizes.split(",")]
    reps = [int(r) for r in args.repeats.split(",")]
    reps = reps * len(sizes) if len(reps) == 1 else reps
    assert len(reps) == len(sizes), "--repeats: one number, or one per size"
    noop_sizes = {int(s) for s in args.noop_sizes.split(",") if s}
    assert os.geteuid() == 0, "needs root (network namespaces, sshds, BPF)"
    # SIGTERM (and SIGINT, which a background job ignores) end the run through the cleanup below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    check_playbooks()
    assert not leftovers(), "leftovers of an earlier run: %s (tests/lab/netns_lab.sh stop with this prefix)" % leftovers()
    if subprocess.run(["ip", "-o", "addr", "show", "to", NET + ".0.1/16"], capture_output=True,
                      text=True).stdout.strip():
        sys.exit("another interface already has %s.0.1/16 (a default lab running?); stop it first" % NET)

    ver = subprocess.run([os.path.join(BIN, "ansible"), "--version"], capture_output=True, text=True).stdout
    posix_ver = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "list", "ansible.posix"],
                               capture_output=True, text=True).stdout
    posix_ver = (re.findall(r"ansible\.posix\s+(\S+)", posix_ver) or ["?"])[0]
    meta = {"benchmark": "fleet_rollout", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                     "loadavg_start": list(os.getloadavg()),
                     "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)},
            "ansible_core": ver.splitlines()[0].strip(), "ansible_posix": posix_ver,
            "python": platform.python_version(), "forks": args.forks, "sizes": sizes,
            "repeats": dict(zip(map(str, sizes), reps)), "noop_sizes": sorted(noop_sizes),
            "keys": len(PROFILE), "profile": PROFILE,
            "command": " ".join([os.path.relpath(sys.executable, ROOT), os.path.relpath(__file__, ROOT)] + sys.argv[1:])}
    print("fleet_rollout: %s, load %s" % (meta["ansible_core"], meta["host"]["loadavg_start"]), flush=True)
    before_host = host_values()
    scratch = tempfile.mkdtemp(prefix="bench-fleet-")
    made_headers = not machine_headers.present()
    if made_headers:
        bcc_headers(scratch, "present")
    meta["headers_fallback_made_by_benchmark"] = made_headers
    lab = Lab(scratch)
    reset = None
    runs = []
    try:
        for size, nrep in zip(sizes, reps):
            lab.start(size)
            meta.setdefault("lab_mounts_added_by_benchmark", {})[str(size)] = sorted(
                set(" && ".join(v) for v in lab.mounted.values() if v)) or ["none (netns_lab.sh mounts them)"]
            defaults = read_ns(lab.hosts()[0])
            reset = Resetter(lab, scratch, args.forks, defaults)
            print("== %d hosts, %d repeats, forks %d (load %.2f)" % (size, nrep, args.forks, os.getloadavg()[0]),
                  flush=True)
            for r in range(nrep):
                order = list(ARMS) if r % 2 == 0 else list(reversed(ARMS))
                for arm in order:
                    reset()
                    play = os.path.join(FLEET, arm + ".yml")
                    rec = {"size": size, "repeat": r + 1, "arm": arm, "order": order.index(arm) + 1,
                           "load1_before": os.getloadavg()[0]}
                    wall, changed, tasks, _ = run_play(lab, play, args.forks, scratch, "%s apply" % arm)
                    verify_apply(lab, arm, changed)
                    rec.update(apply_s=wall, apply_tasks=tasks, apply_changed=sum(changed.values()))
                    line = "  %2d hosts r%d %-8s apply %7.2fs (changed %d)" % (size, r + 1, arm, wall,
                                                                                 rec["apply_changed"])
                    if arm == "netstack":
                        rec["apply_parts"] = split_tasks(tasks)
                        line += " [sysctl %.2fs, bpf %.2fs]" % (rec["apply_parts"]["sysctl"], rec["apply_parts"]["bpf"])
                    if size in noop_sizes:
                        wall, changed, tasks, _ = run_play(lab, play, args.forks, scratch, "%s noop" % arm)
                        assert len(changed) == size and not any(changed.values()), (arm, "noop changed", changed)
                        rec.update(noop_s=wall, noop_tasks=tasks)
                        if arm == "netstack":
                            rec["noop_parts"] = split_tasks(tasks)
                        line += "  noop %7.2fs" % wall
                        if arm == "netstack":  # again, without the bcc proof: every run before it was kept
                            for h in lab.hosts():
                                os.remove(os.path.join(lab.state_dir(h), BCC_RECORD))
                            wall, changed, tasks, _ = run_play(lab, play, args.forks, scratch, "netstack noop-full")
                            assert changed == {h: 1 for h in lab.hosts()}, ("noop-full changed", changed)
                            rec.update(noopfull_s=wall, noopfull_tasks=tasks, noopfull_parts=split_tasks(tasks))
                            line += "  noop-full-bcc %7.2fs" % wall
                    runs.append(rec)
                    print(line, flush=True)
            reset()
            lab.stop()
            remove_cgroups()
            done = sizes[:sizes.index(size) + 1]
            if done != sizes:  # partial results after each size, in case the run is cut short
                meta["loadavg_end"] = list(os.getloadavg())
                write_results(dict(meta, partial=True, sizes=done), runs, done, args.out)
    finally:
        if lab.n and reset is not None:
            try:
                reset()
            except Exception as e:  # still stop the lab
                print("cleanup reset failed: %s" % e, file=sys.stderr)
            lab.stop()
        remove_cgroups()
        if made_headers:
            bcc_headers(scratch, "absent")
        shutil.rmtree(scratch, ignore_errors=True)
    assert machine_headers.present() != made_headers, "the headers fallback was not put back as it was"
    left = leftovers()
    assert not left, "left behind: %s" % left
    assert host_values() == before_host, "this machine's own sysctls changed"
    meta["cleanup"] = "checked: no %s namespaces/links, no pins %s/%s-*, no %s, no %s, no processes" % (
        PREFIX, PINROOT, PREFIX, CGDIR, STATE)
    meta["loadavg_end"] = list(os.getloadavg())
    write_results(meta, runs, sizes, args.out)


def summarize(meta, runs, sizes):
    summ = {}
    for size in sizes:
        s = {}
        for arm in ARMS:
            rs = [r for r in runs if r["size"] == size and r["arm"] == arm]
            s[arm] = {"apply_s": stats([r["apply_s"] for r in rs]),
                      "noop_s": stats([r["noop_s"] for r in rs if "noop_s" in r])}
            if arm == "netstack":  # parts recomputed from the raw per-task times
                s[arm]["noopfull_s"] = stats([r["noopfull_s"] for r in rs if "noopfull_s" in r])
                for part in ("sysctl", "bpf", "bcc_runtime", "bcc_check", "bcc_install", "bcc_smoke", "tcp_tuning",
                             "bpf_load"):
                    for run in ("apply", "noop", "noopfull"):
                        s[arm]["%s_%s_s" % (run, part)] = stats([split_tasks(r[run + "_tasks"]).get(part, 0.0)
                                                                 for r in rs if run + "_tasks" in r])
            # every task's time added up, and the wall time less A's BPF play (A's sysctl part as
            # a run of its own would take it: start-up and connections included)
            s[arm]["apply_tasks_s"] = stats([sum(r["apply_tasks"].values()) for r in rs])
            s[arm]["noop_tasks_s"] = stats([sum(r["noop_tasks"].values()) for r in rs if "noop_tasks" in r])
            if arm == "netstack":
                s[arm]["apply_wall_less_bpf_s"] = stats([r["apply_s"] - split_tasks(r["apply_tasks"])["bpf"]
                                                         for r in rs])
                s[arm]["noop_wall_less_bpf_s"] = stats([r["noop_s"] - split_tasks(r["noop_tasks"])["bpf"]
                                                        for r in rs if "noop_tasks" in r])
        a, b = s["netstack"], s["posix"]
        for run in ("apply", "noop"):
            if not (a[run + "_s"] and b[run + "_s"]):
                continue
            sfx = "" if run == "apply" else "_noop"
            s["ratio_b_over_a" + sfx] = b[run + "_s"]["median"] / a[run + "_s"]["median"]
            # the 20 sysctls alone: B's 20 task times against A's one sysctl_set task time, and
            # B's wall time against A's wall time less its BPF play
            s["ratio_b_over_a_sysctl_part" + sfx] = b[run + "_tasks_s"]["median"] / a[run + "_sysctl_s"]["median"]
            s["ratio_b_over_a_sysctl_wall" + sfx] = b[run + "_s"]["median"] / a[run + "_wall_less_bpf_s"]["median"]
        for arm in ARMS:
            s[arm]["apply_per_host_s"] = s[arm]["apply_s"]["median"] / size
        summ[str(size)] = s
    over = {}
    if 1 in sizes:
        for size in sizes:
            if size == 1:
                continue
            o = {}
            for arm in ARMS:
                o[arm] = (summ[str(size)][arm]["apply_s"]["median"] - summ["1"][arm]["apply_s"]["median"]) / (size - 1)
            o["netstack_sysctl_part"] = (summ[str(size)]["netstack"]["apply_sysctl_s"]["median"]
                                         - summ["1"]["netstack"]["apply_sysctl_s"]["median"]) / (size - 1)
            o["netstack_bpf_part"] = (summ[str(size)]["netstack"]["apply_bpf_s"]["median"]
                                      - summ["1"]["netstack"]["apply_bpf_s"]["median"]) / (size - 1)
            over[str(size)] = o
    return summ, over


CAVEATS = [
    "One machine plays the controller and every host: 2 CPUs run ansible-playbook and its forks, every "
    "lab sshd, every module process and every bcc compile. At 50 hosts (forks 50) the run is CPU-bound, so "
    "the per-host overhead measured here is CPU time on this machine, not network latency; on a real fleet "
    "the host-side half of it runs in parallel on the hosts and only the controller's share grows with N.",
    "The machine is shared with other work, so the numbers are noisy; the 1-minute load before every run "
    "is in the JSON (`load1_before`). Compare arms within a size (interleaved, order alternating), not "
    "absolute seconds across sessions.",
    "BPF compile: `bpf_program` has no compile cache. Every host compiles tcp_tuning.bpf.c with bcc (clang) "
    "itself; hosts 2..N do not reuse the first compile (each is a separate process on a separate host). "
    "A no-op run compiles nothing (the record's digest and the kernel's attached program match). The role's "
    "dependency bcc_runtime proves the toolchain on a host's first run (apt check, header stats, a smoke "
    "compile and load; `bcc_runtime_verify: true`, the default) and records the proof in the state dir; a "
    "later run checks that record with one script and skips the rest. Every apply here is a host's first "
    "(the reset empties the state dir); the no-op runs show the later runs, and 'no-op, full bcc pass' "
    "deletes the record first, which is what every run cost before the record was kept.",
    "A includes what a user of the role gets: the role as shipped, with its meta dependency bcc_runtime "
    "(bcc already installed, headers present: nothing to install). B has no BPF part at all; "
    "the 'B/A sysctls only' columns compare the 20 sysctls alone.",
    "A's parts are ansible.posix.profile_tasks task times (task start to next task start, over all hosts "
    "at once); they do not add up to the wall time: start-up, inventory and playbook parsing and the "
    "switch between the two plays are in no task. B runs with the same callback enabled.",
    "Lab hosts are namespaces: each sshd runs in a private mount namespace with a fresh /sys, in which "
    "netns_lab.sh mounts the machine's cgroup v2 hierarchy (/sys/fs/cgroup/unified) and a BPF filesystem "
    "of the host's own (where the benchmark finds them missing it mounts them itself, untimed; the JSON "
    "says which). Pins are therefore per host. Cgroups are machine-wide, so every host gets its own cgroup "
    "netstack-bench/<host> (empty: the programs see no traffic) and its own pin name.",
    "Every run starts with cold SSH: a fresh ControlPath directory per ansible-playbook run (connections "
    "are reused within the run, pipelining is on as in ansible.cfg); its control masters are ended after it.",
    "Between runs (untimed) the program set is removed, cgroups and state dirs emptied and the 20 keys "
    "reset to a fresh namespace's defaults, except tcp_sack and tcp_window_scaling, set to 0 (a fresh "
    "namespace already has the profile's 1), so every apply changes all 20 keys; checked per host (A: 20 "
    "keys in the journal entry and 5 changed tasks, the fifth bcc_runtime's proof record, B: 20 changed tasks; values read back in every "
    "namespace; pin and cgroup attachment checked).",
    "B keeps ansible.posix.sysctl's default reload: true (as benchmarks/sysctl_apply.py), so each changed "
    "task also runs `sysctl -p` on the host's own file.",
]


def fmt(st):
    return "-" if not st else "%.2f (%.2f-%.2f)" % (st["median"], st["min"], st["max"])


def write_results(meta, runs, sizes, out):
    summ, over = summarize(meta, runs, sizes)
    res = dict(meta, summary=summ, per_host_overhead_s=over, runs=runs)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "fleet_rollout.json"), "w") as f:
        json.dump(res, f, indent=1)
    h = meta["host"]
    md = ["# fleet_rollout: 20 sysctls + one BPF capability over SSH to 1-50 lab hosts, vs ansible.posix.sysctl",
          "",
          "Run %s: kernel %s, %d CPUs, %.0f GiB, load average at start %.2f / %.2f / %.2f (end %.2f); %s, "
          "ansible.posix %s, forks %d for every size and both arms; repeats %s (hosts: repeats); no-op runs at %s hosts."
          % (meta["date"], h["kernel"], h["cpus"], h["mem_gib"], h["loadavg_start"][0], h["loadavg_start"][1],
             h["loadavg_start"][2], meta["loadavg_end"][0], meta["ansible_core"], meta["ansible_posix"],
             meta["forks"], ", ".join("%s: %s" % kv for kv in meta["repeats"].items()),
             ", ".join(map(str, meta["noop_sizes"])) or "none"),
          "",
          "Command: `%s`" % meta["command"], "",
          "* **A (netstack)**: `benchmarks/fleet/netstack.yml`: one `netstack.tuning.sysctl_set` task with the 20 keys,",
          "  then the `netstack.tuning.tcp_tuning` role (and its dependency `bcc_runtime`), one loopback rule, each host",
          "  with its own cgroup `netstack-bench/<host>`, pins `/sys/fs/bpf/netstack/<host>` and state dir.",
          "* **B (baseline)**: `benchmarks/fleet/posix.yml`: the same 20 keys, one `ansible.posix.sysctl` task per key.",
          "* Wall time is the whole `ansible-playbook` run (start-up, SSH connections, every task), seconds;",
          "  median (min-max). A's parts come from `ansible.posix.profile_tasks` (task start to next task start,",
          "  all hosts together): *sysctl* = the sysctl_set task, *BPF* = the tcp_tuning role with bcc_runtime.",
          "", "## Apply (every host changes all 20 keys; A also loads and attaches the program)", "",
          "| hosts | A netstack wall | A: sysctl task | A: BPF play (tasks) | A wall less BPF play | B posix wall | B: 20 tasks | B/A wall | B/A sysctls only: tasks | B/A sysctls only: wall | A wall/N | B wall/N |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in sizes:
        s = summ[str(size)]
        a, b = s["netstack"], s["posix"]
        md.append("| %d | %s | %s | %s | %s | %s | %s | %.2fx | %.1fx | %.2fx | %.2f | %.2f |" % (
            size, fmt(a["apply_s"]), fmt(a["apply_sysctl_s"]), fmt(a["apply_bpf_s"]), fmt(a["apply_wall_less_bpf_s"]),
            fmt(b["apply_s"]), fmt(b["apply_tasks_s"]), s["ratio_b_over_a"], s["ratio_b_over_a_sysctl_part"],
            s["ratio_b_over_a_sysctl_wall"], a["apply_per_host_s"], b["apply_per_host_s"]))
    md += ["", "*B/A sysctls only: tasks* = B's 20 task times added up / A's one sysctl_set task time; "
           "*wall* = B's wall time / (A's wall time less its BPF play's task times), i.e. against what A would "
           "take without the BPF capability, start-up and SSH connections included."]
    md += ["", "A's BPF part in pieces, apply runs (medians, s; task times over all hosts at once):", "",
           "| hosts | bcc_runtime (dependency) | of it: proof check | of it: apt check 'Install bcc' | "
           "of it: smoke compile | tcp_tuning role tasks | of it: compile+load+attach (bpf_program) |",
           "|---|---|---|---|---|---|---|"]
    for size in sizes:
        a = summ[str(size)]["netstack"]
        md.append("| %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |" % (
            size, a["apply_bcc_runtime_s"]["median"], a["apply_bcc_check_s"]["median"],
            a["apply_bcc_install_s"]["median"], a["apply_bcc_smoke_s"]["median"], a["apply_tcp_tuning_s"]["median"],
            a["apply_bpf_load_s"]["median"]))
    if over:
        md += ["", "## Per-host overhead: (wall(N) - wall(1)) / (N - 1), from medians, seconds per extra host", "",
               "| hosts | A netstack total | A: sysctl part | A: BPF part | B posix |", "|---|---|---|---|---|"]
        for size, o in over.items():
            md.append("| %s | %.3f | %.3f | %.3f | %.3f |" % (size, o["netstack"], o["netstack_sysctl_part"],
                                                         o["netstack_bpf_part"], o["posix"]))
    if over and str(max(sizes)) in over:
        n = max(sizes)
        o, a = over[str(n)], summ[str(n)]["netstack"]
        md += ["", "In short (1 to %d hosts): each extra host costs B %.2f s and A's sysctl task %.2f s (%.0fx less); "
               "the BPF capability adds %.2f s per host, of which the bcc_runtime dependency is %.0f%% at %d hosts "
               "(a host's first run: apt check, headers, smoke compile) and tcp_tuner's own compile+load+attach %.0f%%."
               % (n, o["posix"], o["netstack_sysctl_part"], o["posix"] / o["netstack_sysctl_part"],
                  o["netstack_bpf_part"], 100 * a["apply_bcc_runtime_s"]["median"] / a["apply_bpf_s"]["median"], n,
                  100 * a["apply_bpf_load_s"]["median"] / a["apply_bpf_s"]["median"])]
    loads = ["%d hosts %.1f-%.1f" % (size, min(r["load1_before"] for r in runs if r["size"] == size),
                                     max(r["load1_before"] for r in runs if r["size"] == size)) for size in sizes]
    md += ["", "1-minute load average before the runs (other work shared the machine): %s." % ", ".join(loads)]
    noop = [size for size in sizes if summ[str(size)]["netstack"]["noop_s"]]
    if noop:
        md += ["", "## No-op second run (same playbook again, changed=0 asserted on every host)", "",
               "| hosts | A netstack wall | A: sysctl task | A: BPF play (tasks) | A wall less BPF play | B posix wall | B: 20 tasks | B/A wall | B/A sysctls only: tasks | B/A sysctls only: wall |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for size in noop:
            s = summ[str(size)]
            a, b = s["netstack"], s["posix"]
            md.append("| %d | %s | %s | %s | %s | %s | %s | %.2fx | %.1fx | %.2fx |" % (
                size, fmt(a["noop_s"]), fmt(a["noop_sysctl_s"]), fmt(a["noop_bpf_s"]), fmt(a["noop_wall_less_bpf_s"]),
                fmt(b["noop_s"]), fmt(b["noop_tasks_s"]), s["ratio_b_over_a_noop"],
                s["ratio_b_over_a_sysctl_part_noop"], s["ratio_b_over_a_sysctl_wall_noop"]))
        full = [size for size in noop if summ[str(size)]["netstack"].get("noopfull_s")]
        if full:
            md += ["", "A's no-op run with bcc_runtime's proof record (as shipped) against the same run with the "
                   "record deleted first (the full bcc pass: what every run cost before the record was kept), "
                   "same hosts, same repeat:", "",
                   "| hosts | A no-op wall | A no-op, full bcc pass | full/record wall | bcc_runtime tasks: record | "
                   "bcc_runtime tasks: full pass | of the full pass: apt check, smoke compile |",
                   "|---|---|---|---|---|---|---|"]
            for size in full:
                a = summ[str(size)]["netstack"]
                md.append("| %d | %s | %s | %.2fx | %s | %s | %.2f, %.2f |" % (
                    size, fmt(a["noop_s"]), fmt(a["noopfull_s"]), a["noopfull_s"]["median"] / a["noop_s"]["median"],
                    fmt(a["noop_bcc_runtime_s"]), fmt(a["noopfull_bcc_runtime_s"]),
                    a["noopfull_bcc_install_s"]["median"], a["noopfull_bcc_smoke_s"]["median"]))
    md += ["", "## Caveats", ""] + ["* " + c for c in CAVEATS] + [
        "", "Raw timings, per-task times and per-run load: `benchmarks/results/fleet_rollout.json`.", ""]
    with open(os.path.join(out, "fleet_rollout.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))
    print("results in %s" % out)


if __name__ == "__main__":
    main()
