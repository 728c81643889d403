"""playbooks/zerocopy.yml on the many-host lab over real SSH: every host measures its
loopback and a veth pair, and in a ring the real interface (its lab eth0 over the lab
bridge) to the next host, whose zerocopy_test serve answers; one report on the controller.
The lab hosts are namespaces of this machine, so `zerocopy_check_throttle: 1` keeps their
figures from disturbing each other."""
import json
import subprocess

from conftest import PREFIX, REPO, lab, leftovers


def netns_list():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_zerocopy_playbook_ring_on_three_lab_hosts(lab_env, tmp_path):
    inventory = tmp_path / "hosts.yml"
    assert lab(lab_env, "start", "3", check=False).returncode == 0
    hosts = ["%s-%03d" % (PREFIX, i) for i in (1, 2, 3)]
    before = netns_list()
    report = tmp_path / "reports"
    extra = {"zerocopy_targets": "lab", "zerocopy_check_peers": "ring", "zerocopy_check_throttle": 1,
             "zerocopy_check_paths": ["loopback", "veth"], "zerocopy_check_protocols": ["tcp", "udp"],
             "zerocopy_check_sizes": ["4K", "64K"], "zerocopy_check_modes": ["copy", "msg_zerocopy", "io_uring_zc"],
             "zerocopy_check_duration": 0.2, "zerocopy_check_repeats": 1, "zerocopy_check_report_dir": str(report)}
    play = subprocess.run(["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "zerocopy.yml"),
                           "-e", json.dumps(extra)], env=lab_env, capture_output=True, text=True, cwd=str(REPO))
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    results = json.loads((report / "zerocopy.json").read_text())
    assert sorted(results) == hosts
    addresses = {}
    for h in hosts:
        r = results[h]
        assert not r.get("failed"), r.get("msg")
        assert r["params"]["paths"] == ["loopback", "veth", "peer"]
        addresses[h] = r["params"]["peer_address"]
        peer = [c for c in r["cells"] if c["path"] == "peer" and c["status"] == "ok"]
        # copy and msg_zerocopy/io_uring_zc at 4K and 64K over TCP, at 4K over UDP
        assert len(peer) == 3 * 3
        assert all(c["throughput_gbps"]["median"] > 0 for c in peer)
        zc = [c for c in peer if c["mode"] != "copy"]
        assert all(c["completions"] > 0 and c["copied_fraction"] >= 0.99 for c in zc), zc
        assert r["recommendations"]["peer"]["tcp"]["verdict"] == "copies-by-design"
    # the ring: host i sent to host i+1's lab address (198.19.0.10 + i, see netns_lab.sh)
    for i, h in enumerate(hosts, start=1):
        assert addresses[h] == "198.19.0.%d" % (10 + i % 3 + 1)
    page = (report / "zerocopy.html").read_text()
    assert all(h in page for h in hosts) and page.count("<svg") >= 3 * 2 * 3
    assert "| 64K |" in (report / "zerocopy.md").read_text()
    assert netns_list() == before  # every veth path's namespaces removed
    assert lab(lab_env, "stop", check=False).returncode == 0
    assert leftovers() == []
