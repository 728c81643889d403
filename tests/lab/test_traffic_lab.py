"""playbooks/traffic.yml on the many-host lab over real SSH: every host counts its lab
interface with the traffic collector while the hosts ping each other (known counts), the
stores are gathered to the controller and one report covers every host.  The collector is
oneshot: nothing stays attached on any host afterwards."""
import json
import subprocess
import threading
import time

from conftest import PREFIX, REPO, lab, leftovers

PINGS = 30


def test_traffic_playbook_on_three_lab_hosts(lab_env, tmp_path):
    inventory = tmp_path / "hosts.yml"
    assert lab(lab_env, "start", "3", check=False).returncode == 0
    hosts = ["%s-%03d" % (PREFIX, i) for i in (1, 2, 3)]
    addr = dict((h, "198.19.0.%d" % (10 + i)) for i, h in enumerate(hosts, start=1))
    report = tmp_path / "reports"
    extra = {"traffic_targets": "lab", "traffic_insight_interfaces": ["eth0"], "traffic_insight_duration": 30,
             "traffic_insight_interval": 2, "traffic_insight_report_dir": str(report),
             "traffic_insight_analysis": {"capacity": {"%s:eth0" % hosts[0]: 1e9}}}

    def attached(h):
        out = ""
        for hook in ("ingress", "egress"):
            out += subprocess.run(["ip", "netns", "exec", h, "tc", "filter", "show", "dev", "eth0", hook],
                                  capture_output=True, text=True).stdout
        return out.count("bpf") >= 2

    def pings():
        # once every host's collector is attached on ingress and egress, each host pings the
        # next: PINGS requests of 1000 bytes (L3)
        deadline = time.time() + 90
        while not all(attached(h) for h in hosts):
            assert time.time() < deadline, "the collectors were not attached within 90 s"
            time.sleep(0.5)
        for i, h in enumerate(hosts):
            nxt = hosts[(i + 1) % len(hosts)]
            subprocess.run(["ip", "netns", "exec", h, "ping", "-q", "-c", str(PINGS), "-i", "0.05", "-s", "972", addr[nxt]],
                           capture_output=True, check=True)

    t = threading.Thread(target=pings)
    t.start()
    play = subprocess.run(["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "traffic.yml"),
                           "-e", json.dumps(extra)], env=lab_env, capture_output=True, text=True, cwd=str(REPO))
    t.join()
    assert play.returncode == 0, play.stdout[-4000:] + play.stderr[-2000:]
    result = json.loads((report / "traffic.json").read_text())
    links = sorted(set(s["link"] for s in result["series"]))
    assert links == ["%s:eth0" % h for h in hosts]
    # every host's store came to the controller, and its ICMP counts are exact: it sent PINGS
    # requests to its neighbour and answered PINGS from the other one, 1000 bytes each
    for h in hosts:
        files = list((report / "data" / h).glob("*.csv"))
        assert files, h
        rows = [line.split(",") for f in files for line in f.read_text().splitlines()[1:]]
        icmp = [r for r in rows if r[4] == "1"]
        for direction in ("in", "out"):
            pk = sum(int(r[8]) for r in icmp if r[2] == direction)
            by = sum(int(r[7]) for r in icmp if r[2] == direction)
            assert (pk, by) == (2 * PINGS, 2 * PINGS * 1000), (h, direction, pk, by)
        assert set(r[3] for r in icmp) == {"198.19.0.0/24"}
    page = (report / "traffic.html").read_text()
    assert all(h in page for h in hosts) and page.count("<svg") >= 3
    assert result["water_levels"][0]["link"] == "%s:eth0" % hosts[0]
    assert lab(lab_env, "stop", check=False).returncode == 0
    assert leftovers() == []
