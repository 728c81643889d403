"""playbooks/tune.yml on the many-host lab, end to end over real SSH: a study on the
canary, the winner rolled out in serial batches behind the health gate, then every host
rolled back through its journal and the lab stopped with nothing left.

And sysctl_study in remote-client mode: one lab host's own nginx tuned with the load
coming from another lab host.

The lab hosts are network namespaces of this machine, so the runs use the
per-namespace search space and roll out only per-namespace keys (docs/tuning.md)."""
import json
import subprocess
import time

from conftest import PREFIX, REPO, lab, leftovers

SPACE = REPO / "roles" / "sysctl_tuner" / "files" / "spaces" / "nginx_latency_netns.yml"


def ns_sysctl(ns, key):
    return subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n", key], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_tune_playbook_on_three_lab_hosts(lab_env, tmp_path):
    inventory = tmp_path / "hosts.yml"
    assert lab(lab_env, "start", "3", check=False).returncode == 0
    hosts = ["%s-%03d" % (PREFIX, i) for i in (1, 2, 3)]
    keys = ["net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_wmem"]
    before = {h: [ns_sysctl(h, k) for k in keys] for h in hosts}
    extra = {
        "tune_targets": "lab", "tune_gate_factor": 50, "tune_serial": [1, 2],
        "sysctl_tuner_space": str(SPACE), "sysctl_tuner_rollout_scope": "netns", "sysctl_tuner_persist": "runtime",
        "sysctl_tuner_state_dir": "{{ netstack_state_dir }}", "sysctl_tuner_storage": str(tmp_path / "s.db"),
        "sysctl_tuner_trials": 3, "sysctl_tuner_verify_rounds": 3, "sysctl_tuner_require_accepted": False,
        "sysctl_tuner_prune_factor": 0, "sysctl_tuner_min_rps_ratio": 0.0,
        "sysctl_tuner_bench": {"duration": 1, "warmup": 0, "repeats": 1, "connections": 4},
        "sysctl_tuner_gate_bench": {"duration": 1, "warmup": 0, "repeats": 1, "connections": 4},
    }
    play = subprocess.run(["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "tune.yml"),
                           "-e", json.dumps(extra)], env=lab_env, capture_output=True, text=True, cwd=str(REPO))
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    assert "trial 3/3" in play.stdout
    for h in hosts:
        assert "%s " % h in play.stdout and "failed=0" in play.stdout
    rolled = {h: [ns_sysctl(h, k) for k in keys] for h in hosts}
    # every host got the same winner, and the winner differs from the defaults somewhere
    assert rolled[hosts[0]] == rolled[hosts[1]] == rolled[hosts[2]]
    assert rolled[hosts[0]] != before[hosts[0]]
    back = subprocess.run(["ansible", "-i", str(inventory), "lab", "-m", "netstack.tuning.netstack_journal",
                           "-a", "action=rollback state_dir={{ netstack_state_dir }}"],
                          env=lab_env, capture_output=True, text=True, cwd=str(REPO))
    assert back.returncode == 0, back.stdout[-3000:]
    assert {h: [ns_sysctl(h, k) for k in keys] for h in hosts} == before
    assert lab(lab_env, "stop", check=False).returncode == 0
    assert leftovers() == []


NGINX_CONF = """worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
    server {{ listen {addr}:8080; location / {{ return 200 "netstack lab\\n"; }} }}
}}
"""

STUDY_PLAY = """
- hosts: {web}
  gather_facts: false
  tasks:
    - name: A remote-client study of this host's own nginx
      netstack.tuning.sysctl_study:
        client: {load}
        target_url: http://{addr}:8080/
        tune_client: true
        space: {space}
        trials: 5
        halving: 2
        verify_rounds: 3
        compare_tuned: false
        prune_factor: 0
        min_rps_ratio: 0
        confirm_timeout: 120
        storage: {tmp}/s.db
        state_dir: "{{{{ netstack_state_dir }}}}"
        client_state_dir: "{{{{ hostvars['{load}'].netstack_state_dir }}}}"
        bench: {{duration: 1, warmup: 0, repeats: 2, connections: 4, keepalive: false}}
      register: study
    - name: Keep the result
      ansible.builtin.copy:
        content: "{{{{ study | to_json }}}}"
        dest: {tmp}/study.json
        mode: "0600"
      delegate_to: localhost
"""


def test_study_with_a_remote_client_on_two_lab_hosts(lab_env, tmp_path):
    """sysctl_study in remote-client mode over real SSH: host 1 serves with its own nginx,
    host 2 runs wrk against it across the lab's bridge. Every trial's set is applied on
    both hosts commit-confirmed and rolled back through each host's journal; both end as
    they started, and the requests in nginx's log came from host 2."""
    assert lab(lab_env, "start", "2", check=False).returncode == 0
    web, load = "%s-001" % PREFIX, "%s-002" % PREFIX
    addr, client_addr = "198.19.0.11", "198.19.0.12"
    keys = ["net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_wmem", "net.ipv4.tcp_rmem"]
    before = {h: [ns_sysctl(h, k) for k in keys] for h in (web, load)}
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp_path, addr=addr))
    subprocess.run(["ip", "netns", "exec", web, "nginx", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                   check=True, capture_output=True)
    try:
        (tmp_path / "play.yml").write_text(STUDY_PLAY.format(web=web, load=load, addr=addr, space=SPACE, tmp=tmp_path))
        play = subprocess.run(["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
                              env=lab_env, capture_output=True, text=True, cwd=str(REPO))
        assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
        res = json.loads((tmp_path / "study.json").read_text())
        assert res["client"] == load and res["target_url"] == "http://%s:8080/" % addr and res["tune_client"]
        assert res["trials"] == 5 and res["halving"] == 2 and "trial 5/5" in play.stdout
        assert "remote client %s requests http://%s:8080/; trials change %s and %s" % (load, addr, web, load) \
            in play.stdout
        assert res["baseline"]["rps"] > 0 and res["best"] and set(res["verification"]["arms"]) == {"defaults", "best"}
        # wrk ran on host 2: every request nginx logged came from its address
        clients = {line.split()[0] for line in (tmp_path / "access.log").read_text().splitlines()}
        assert clients == {client_addr}
        # each host journaled the trials' sets and rolled every one of them back
        for h in (web, load):
            entries = json.loads(subprocess.run(
                ["ansible", "-i", str(tmp_path / "hosts.yml"), h, "-m", "netstack.tuning.netstack_journal",
                 "-a", "action=list state_dir={{ netstack_state_dir }}", "-o"],
                env=lab_env, capture_output=True, text=True, cwd=str(REPO), check=True).stdout.split(" => ", 1)[1])
            states = [e["state"] for e in entries["entries"]]
            assert states and set(states) == {"rolled_back"}, (h, states)
        assert {h: [ns_sysctl(h, k) for k in keys] for h in (web, load)} == before
    finally:
        subprocess.run(["ip", "netns", "exec", web, "nginx", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path),
                        "-s", "stop"], capture_output=True)
        deadline = time.time() + 10
        while (tmp_path / "nginx.pid").exists() and time.time() < deadline:  # the master removes it as it exits
            time.sleep(0.1)
    assert not (tmp_path / "nginx.pid").exists(), "nginx did not stop"
    assert lab(lab_env, "stop", check=False).returncode == 0
    assert leftovers() == []
