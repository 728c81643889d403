#!/usr/bin/env python3
"""Benchmark: a 20-key sysctl profile applied with one sysctl_set task vs twenty
ansible.posix.sysctl tasks (one per key), side by side in the same run.

Both arms run ansible-playbook over the local connection with the same interpreter,
inside a fresh throwaway network namespace per repeat (``ip netns exec``), so both
change that namespace's net.* sysctls and the host is untouched.  Both also persist the
set to a file in a scratch directory (sysctl_set: persist=file; posix.sysctl:
sysctl_file=...), which is how each is used for a lasting change.

For every repeat (arms interleaved, order alternating) two timings are taken:
  apply  - first run, all 20 keys change
  noop   - second run, nothing changes (idempotence check cost)

Results: benchmarks/results/sysctl_apply.json and .md (medians, min-max, ratios).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")

PROFILE = {
    "net.ipv4.tcp_fastopen": 3,
    "net.ipv4.tcp_slow_start_after_idle": 0,
    "net.ipv4.tcp_notsent_lowat": 131072,
    "net.ipv4.tcp_rmem": "4096 131072 16777216",
    "net.ipv4.tcp_wmem": "4096 16384 16777216",
    "net.ipv4.tcp_fin_timeout": 15,
    "net.ipv4.tcp_tw_reuse": 1,
    "net.ipv4.tcp_syn_retries": 4,
    "net.ipv4.tcp_synack_retries": 3,
    "net.ipv4.tcp_keepalive_time": 600,
    "net.ipv4.tcp_keepalive_intvl": 30,
    "net.ipv4.tcp_keepalive_probes": 5,
    "net.ipv4.tcp_max_syn_backlog": 8192,
    "net.ipv4.tcp_mtu_probing": 1,
    "net.ipv4.tcp_sack": 1,
    "net.ipv4.tcp_timestamps": 0,
    "net.ipv4.tcp_window_scaling": 1,
    "net.ipv4.ip_local_port_range": "10240 65000",
    "net.core.somaxconn": 8192,
    "net.ipv4.tcp_no_metrics_save": 1,
}
# Keys already at the wanted value in a fresh namespace still count: both tools must check them.
CHANGING = 18


def playbook_netstack(scratch):
    lines = ["- hosts: localhost", "  gather_facts: false", "  tasks:",
             "    - name: Apply the profile",
             "      netstack.tuning.sysctl_set:",
             "        persist: file", "        persist_dir: %s" % scratch,
             "        persist_file: 60-bench.conf", "        state_dir: %s/state" % scratch,
             "        conflicts: ignore", "        sysctls:"]
    lines += ["          %s: \"%s\"" % (k, v) for k, v in PROFILE.items()]
    return "\n".join(lines) + "\n"


def playbook_posix(scratch):
    lines = ["- hosts: localhost", "  gather_facts: false", "  tasks:"]
    for k, v in PROFILE.items():
        lines += ["    - name: Set %s" % k, "      ansible.posix.sysctl:", "        name: %s" % k,
                  "        value: \"%s\"" % v, "        sysctl_set: true",
                  "        sysctl_file: %s/60-bench.conf" % scratch]
    return "\n".join(lines) + "\n"


def run_play(ns, play, inventory):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    t0 = time.monotonic()
    p = subprocess.run(["ip", "netns", "exec", ns, os.path.join(BIN, "ansible-playbook"), "-i", inventory, play],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("playbook failed:\n" + p.stdout[-3000:] + p.stderr[-2000:])
    recap = [line for line in p.stdout.splitlines() if "changed=" in line][-1]
    changed = int(recap.split("changed=")[1].split()[0])
    return dt, changed


def read_ns(ns):
    out = subprocess.run(["ip", "netns", "exec", ns, "sysctl"] + list(PROFILE), capture_output=True,
                         text=True, check=True).stdout
    return {line.split(" = ")[0]: " ".join(line.split(" = ")[1].split()) for line in out.splitlines()}


def stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
            "samples": [round(x, 3) for x in xs]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-sysctl-")
    inv = os.path.join(tmp, "inv.yml")
    with open(inv, "w") as f:
        f.write("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                "      ansible_python_interpreter: /usr/bin/python3\n")
    arms = {"sysctl_set": playbook_netstack, "posix_sysctl": playbook_posix}
    res = {a: {"apply": [], "noop": [], "changed_apply": [], "changed_noop": []} for a in arms}
    ns = "bench-sysctl-%d" % os.getpid()
    try:
        for r in range(args.repeats):
            order = list(arms) if r % 2 == 0 else list(reversed(arms))
            for arm in order:
                scratch = os.path.join(tmp, "%s-%d" % (arm, r))
                os.makedirs(scratch)
                play = os.path.join(scratch, "play.yml")
                with open(play, "w") as f:
                    f.write(arms[arm](scratch))
                subprocess.run(["ip", "netns", "add", ns], check=True)
                try:
                    t_apply, c_apply = run_play(ns, play, inv)
                    got = read_ns(ns)
                    for k, v in PROFILE.items():
                        assert got[k] == " ".join(str(v).split()), (arm, k, got[k], v)
                    t_noop, c_noop = run_play(ns, play, inv)
                finally:
                    subprocess.run(["ip", "netns", "del", ns], check=True)
                res[arm]["apply"].append(t_apply)
                res[arm]["noop"].append(t_noop)
                res[arm]["changed_apply"].append(c_apply)
                res[arm]["changed_noop"].append(c_noop)
                print("repeat %d %-13s apply %.2fs (changed tasks %d)  noop %.2fs (changed %d)"
                      % (r + 1, arm, t_apply, c_apply, t_noop, c_noop), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out = {"benchmark": "sysctl_apply", "keys": len(PROFILE), "keys_changing": CHANGING,
           "repeats": args.repeats, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
           "arms": {a: {"apply_s": stats(v["apply"]), "noop_s": stats(v["noop"]),
                        "changed_tasks_apply": v["changed_apply"], "changed_tasks_noop": v["changed_noop"]}
                    for a, v in res.items()}}
    a, b = out["arms"]["sysctl_set"], out["arms"]["posix_sysctl"]
    out["ratio_posix_over_sysctl_set"] = {
        "apply": b["apply_s"]["median"] / a["apply_s"]["median"],
        "noop": b["noop_s"]["median"] / a["noop_s"]["median"]}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sysctl_apply.json"), "w") as f:
        json.dump(out, f, indent=2)
    md = ["# sysctl_apply: 20-key profile, one sysctl_set task vs 20 ansible.posix.sysctl tasks", "",
          "Run %s on kernel %s, %d CPUs; %d repeats, arms interleaved, fresh network namespace each run."
          % (out["date"], out["host"]["kernel"], out["host"]["cpus"], args.repeats), "",
          "| arm | apply median (min-max) s | no-op median (min-max) s |", "|---|---|---|"]
    for arm in ("sysctl_set", "posix_sysctl"):
        s = out["arms"][arm]
        md.append("| %s | %.2f (%.2f-%.2f) | %.2f (%.2f-%.2f) |" % (
            arm, s["apply_s"]["median"], s["apply_s"]["min"], s["apply_s"]["max"],
            s["noop_s"]["median"], s["noop_s"]["min"], s["noop_s"]["max"]))
    md += ["", "posix/sysctl_set wall-time ratio: apply %.2fx, no-op %.2fx."
           % (out["ratio_posix_over_sysctl_set"]["apply"], out["ratio_posix_over_sysctl_set"]["noop"]), ""]
    with open(os.path.join(args.out, "sysctl_apply.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
