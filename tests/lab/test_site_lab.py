"""playbooks/site.yml's rollout guarantees on the many-host lab, over real SSH: the canary
first, then a batch with one unhealthy host. With max_fail_percentage 0 the whole batch is
rolled back (journal and BPF programs) and the rollout stops; with 50 % only the unhealthy
host is. rollback.yml then brings every host back to its state before netstack.

The failure is real, not simulated in the playbook: the operator's health check
(site_health_check) fails on one host, exactly as a failing service check would."""
import json
import os
import subprocess

import pytest

from conftest import PREFIX, REPO, STATE, lab, leftovers

HOSTS = ["%s-%03d" % (PREFIX, i) for i in (1, 2, 3)]
BAD = HOSTS[2]
KEYS = {"net.core.somaxconn": "8192", "net.ipv4.tcp_notsent_lowat": "131072", "net.ipv4.tcp_fin_timeout": "15"}


def sysctls(host):
    out = subprocess.run(["ip", "netns", "exec", host, "sysctl", "-n"] + list(KEYS), capture_output=True, text=True, check=True)
    return dict(zip(KEYS, out.stdout.split("\n")))


def pinned(host):
    """Is the host's tcp_tuning program pinned in its own bpffs (the sshd's mount namespace)."""
    with open("%s/%s/sshd.pid" % (STATE, host)) as f:
        pid = f.read().strip()
    r = subprocess.run(["nsenter", "-t", pid, "-m", "test", "-d", "/sys/fs/bpf/netstack/site_tcp-%s" % host])
    return r.returncode == 0


def applied(host):
    """(profile in force, tcp_tuning program pinned, its cgroup exists) on one lab host."""
    values = sysctls(host)
    return (all(values[k] == v for k, v in KEYS.items()), pinned(host),
            os.path.isdir("/sys/fs/cgroup/unified/netstack-lab-%s" % host))


@pytest.fixture
def lab3(lab_env, tmp_path):
    """Three lab hosts; the inventory directory also gets the lab's group_vars."""
    assert lab(lab_env, "start", "3", check=False).returncode == 0
    os.symlink(str(REPO / "inventories" / "lab" / "group_vars"), str(tmp_path / "group_vars"))
    before = dict((h, sysctls(h)) for h in HOSTS)
    assert all(before[h] != KEYS for h in HOSTS)
    yield lab_env, tmp_path, before
    # whatever happened, nothing of the run may stay behind
    subprocess.run(["ansible-playbook", "-i", str(tmp_path), str(REPO / "playbooks" / "rollback.yml")],
                   env=lab_env, capture_output=True, cwd=str(REPO))


def play(env, inv, name, *extra):
    args = ["ansible-playbook", "-i", str(inv), str(REPO / "playbooks" / name)]
    for e in extra:
        args += ["-e", json.dumps(e)]
    return subprocess.run(args, env=env, capture_output=True, text=True, cwd=str(REPO))


def test_failed_batch_is_rolled_back_then_rollback_restores_everything(lab3, tmp_path_factory):
    env, inv, before = lab3
    reports = tmp_path_factory.mktemp("reports")  # not inside the inventory directory
    gate = {"site_health_check": "test {{ inventory_hostname }} != %s" % BAD, "site_health_retries": 1,
            "netstack_report_dir": str(reports)}

    # 1. one batch of two after the canary, no failure allowed: host 3 fails its gate, so
    #    host 2 (healthy) is rolled back with it and the rollout stops
    r = play(env, inv, "site.yml", gate, {"site_serial": "100%", "site_max_fail_percentage": 0})
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "the whole batch was rolled back" in out, out[-3000:]
    assert applied(HOSTS[0]) == (True, True, True), out[-3000:]
    for h in HOSTS[1:]:
        assert sysctls(h) == before[h], h
        assert not applied(h)[1], h
    assert not (reports / "site.json").exists()  # the play stopped before measuring

    # 2. the same with 50 % allowed: only the unhealthy host is rolled back; the rest is
    #    measured and summarised
    r = play(env, inv, "site.yml", gate, {"site_serial": "100%", "site_max_fail_percentage": 50})
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]           # one host failed
    assert "this host was rolled back" in out, out[-3000:]
    assert [applied(h)[:2] for h in HOSTS] == [(True, True), (True, True), (False, False)], out[-3000:]
    assert sysctls(BAD) == before[BAD]
    site = json.loads((reports / "site.json").read_text())
    assert site["hosts"][HOSTS[0]]["status"] == "applied"
    assert site["hosts"][HOSTS[1]]["status"] == "applied"
    assert (reports / "zerocopy.json").is_file() and (reports / "traffic" / "traffic.json").is_file()

    # 3. the fleet report: every host, its journal and pins
    r = play(env, inv, "report.yml", {"netstack_report_dir": str(reports)})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    data = json.loads((reports / "netstack-report.json").read_text())
    assert sorted(data["hosts"]) == HOSTS
    assert "site_tcp-%s" % HOSTS[0] in data["hosts"][HOSTS[0]]["pins"]
    assert data["hosts"][BAD]["journal_in_force"] == 0
    assert data["hosts"][HOSTS[0]]["journal_in_force"] >= 1
    page = (reports / "netstack-report.html").read_text()
    assert all(h in page for h in HOSTS) and "Zero-copy" in page and "Traffic" in page

    # 4. rollback to before netstack: profile, programs, cgroups gone on every host
    r = play(env, inv, "rollback.yml")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    for h in HOSTS:
        assert sysctls(h) == before[h], h
        assert applied(h) == (False, False, False), h
    assert lab(env, "stop", check=False).returncode == 0
    assert leftovers() == []


def test_bad_request_changes_nothing(lab3):
    env, inv, before = lab3
    r = play(env, inv, "site.yml", {"site_capabilities": "sysctl,warp_drive"})
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "site_capabilities / netstack_capabilities: unknown warp_drive" in out, out[-2000:]
    for h in HOSTS:
        assert sysctls(h) == before[h]
        assert not any(applied(h))
    r = play(env, inv, "rollback.yml", {"rollback_to": "12"})
    assert r.returncode != 0 and "rollback_to: '12' is not a journal id" in r.stdout + r.stderr
