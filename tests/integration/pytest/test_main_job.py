"""The README's main job, playbooks/demo.yml, on this machine exactly as `make demo` runs
it (inventories/local, the lab form): site.yml applies all six capabilities, report.yml
writes the fleet page, rollback.yml takes everything back. The machine must be as it was:
every sysctl of the host namespace, the network namespaces, the BPF pins, the cgroups,
the RPS masks, the agent's files and the lab journal's entries in force."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "support"))
import browser  # noqa: E402
SNAPSHOT = ROOT / "tests" / "integration" / "sysctl-snapshot.sh"


def machine_state():
    """What the main job could change, in a comparable form."""
    def listing(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else None

    rps = {}
    for dev in sorted(os.listdir("/sys/class/net")):
        qdir = Path("/sys/class/net", dev, "queues")
        for q in sorted(qdir.glob("rx-*")) if qdir.is_dir() else []:
            rps["%s/%s" % (dev, q.name)] = (q / "rps_cpus").read_text().strip()
    return {
        "sysctl+netns": subprocess.run([str(SNAPSHOT)], capture_output=True, text=True, check=True).stdout,
        "pins": listing("/sys/fs/bpf/netstack"),
        "cgroup2": [d for d in listing("/sys/fs/cgroup/unified") or [] if d.startswith("netstack")],
        "cpuset": [d for d in listing("/sys/fs/cgroup/cpuset") or [] if d.startswith("netstack")],
        "rps": rps,
        "agent": [p for p in ("/etc/netstack/agent.json", "/usr/local/sbin/netstack-agent") if os.path.exists(p)],
        "irqbalance": Path("/etc/default/irqbalance").read_text() if os.path.exists("/etc/default/irqbalance") else None,
        # bcc_runtime's headers fallback (links under /lib/modules) and records in the default state dir
        "lib_modules": {d: listing("/lib/modules/" + d) for d in listing("/lib/modules") or []},
        "default_state_bcc": [p for p in listing("/var/lib/netstack") or [] if p.startswith("bcc_runtime")],
    }


# The lab form's journal and the agent's log: the job removes them when it made them (the
# assertions say so); the fixture cleans up only after a failed run.
MADE_BY_THE_JOB = ["/var/lib/netstack-lab", "/var/log/netstack"]


@pytest.fixture
def job_dirs():
    existed = {d: os.path.exists(d) for d in MADE_BY_THE_JOB}
    yield existed
    for d, was in existed.items():
        if not was:
            shutil.rmtree(d, ignore_errors=True)


def test_main_job_runs_every_capability_and_leaves_the_machine_as_found(tmp_path, job_dirs):
    before = machine_state()
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    play = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "inventories/local", "playbooks/demo.yml",
                           "-e", json.dumps({"netstack_report_dir": str(tmp_path)})],
                          cwd=str(ROOT), env=env, capture_output=True, text=True)
    out = play.stdout + play.stderr
    assert play.returncode == 0, out[-5000:]

    # every capability ran and said so
    site = json.loads((tmp_path / "site.json").read_text())
    assert site["hosts"]["localhost"]["status"] == "applied"
    assert site["hosts"]["localhost"]["capabilities"] == ["sysctl", "tcp_tuning", "shm_path", "amp", "zerocopy", "traffic"]
    report = json.loads((tmp_path / "netstack-report.json").read_text())
    host = report["hosts"]["localhost"]
    assert {"site_shm", "site_tcp"} <= set(host["pins"]) and host["agent_up"]           # while it was applied
    assert host["journal_in_force"] >= 2                                             # sysctl profile + AMP
    zc = json.loads((tmp_path / "zerocopy.json").read_text())["localhost"]
    assert len(zc["cells"]) == 3 * 3 and "loopback" in zc["recommendations"]         # sizes x modes
    traffic = json.loads((tmp_path / "traffic" / "traffic.json").read_text())
    assert traffic["records"] > 0 and traffic["links"] == ["localhost:nsite0"]
    page = (tmp_path / "netstack-report.html").read_text()
    assert "Zero-copy" in page and "Traffic" in page and "site_tcp" in page
    assert "partition removed" in out and "in force now: none" in out
    # the study on the lossy WAN scenario found a verified gain, and its page shows it
    assert "ACCEPTED - p99" in out, out[-3000:]
    tuning = (tmp_path / "tuning.html").read_text()
    assert "Latency distribution per arm" in tuning and "net.ipv4.tcp_rto_min_us" in tuning
    assert "Sysctl tuning" in page

    # the closing summary: what each capability did, what was taken back, where the report is
    summary = out[out.index("netstack.tuning main job on localhost"):]
    for line in ("sysctl       8 keys set in namespace netstack-site", "ML tuning    8 trials on wan-lossy-keepalive",
                 "zero-copy    loopback/tcp:", "TCP tuning   rule loopback:", "same-host    ", "AMP          network CPUs",
                 "traffic      ", "Taken back: ", "in force now: none", "Report: %s/netstack-report.html" % tmp_path):
        assert line in summary, (line, summary[:3000])
    # the page: evidence per capability while applied, and the hosts after the rollback
    evidence = report["evidence"]["localhost"]
    assert evidence["shm"]["on_path"] and evidence["shm"]["counters"]["shm_bytes"] > 0, evidence["shm"]
    assert sum(r["hits"] for r in evidence["tcp_rules"]) > 0, evidence["tcp_rules"]
    assert sum(evidence["amp"]["softirq"]["NET_RX"].values()) > 0, evidence["amp"]
    assert report["after"]["localhost"]["journal_in_force"] == 0 and not report["after"]["localhost"]["pins"]
    assert "After the rollback" in page and "as before netstack" in page and "Evidence per capability" in page
    # every report reads well in a real browser: plots with marks, no text outside its plot,
    # no sideways overflow (screenshots under build/reports/)
    for html in ("netstack-report.html", "tuning.html", "zerocopy.html", "traffic/traffic.html"):
        problems, seen = browser.check(str(tmp_path / html), shot=str(ROOT / "build" / "reports" / html.replace("/", "-")) + ".png")
        assert not problems and seen["plots"], (html, problems)

    # and everything is back, the directories the job made included
    for d, was in job_dirs.items():
        assert os.path.exists(d) == was, d
    after = machine_state()
    for key in before:
        assert after[key] == before[key], key
    journal = subprocess.run(["/usr/bin/python3", "-c", "import json,sys; sys.path.insert(0, 'collections');"
                              "from ansible_collections.netstack.tuning.plugins.module_utils.core.journal import Journal, ACTIVE_STATES;"
                              "print(json.dumps([t.id for t in Journal('/var/lib/netstack-lab').transactions()"
                              " if t.state in ACTIVE_STATES]))"], cwd=str(ROOT), capture_output=True, text=True, check=True)
    assert json.loads(journal.stdout) == []
