"""The traffic collector against this machine's kernel: exact counts of a known traffic mix.

Run as root with Debian's python: /usr/bin/python3 -m pytest tests/integration/traffic -q
"""

import csv
import json
import os
import socket
import stat
import struct
import time

import pytest

import talib
from talib import CLI4, CLI6, UDP4_HDR, UDP6_HDR, bpf, one, rows_for, trafficcollect
from ansible_collections.netstack.tuning.plugins.module_utils.agent import config as agent_config
from ansible_collections.netstack.tuning.plugins.module_utils.agent import control
from ansible_collections.netstack.tuning.plugins.module_utils.agent import daemon
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import data as trafficdata
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

LINK = "lab:" + talib.SRV_IF


def loaded(lab, make_collector, **kw):
    """A collector present on the lab, with the lab's warm-up traffic scraped away."""
    c = make_collector(lab, **kw)
    res = c.present()
    assert res["changed"]
    c.scrape()
    return c


def row(rows, direction, port_class, dscp=0, proto=17, prefix="198.18.102.0/24"):
    return one(rows, link=LINK, direction=direction, prefix=prefix, proto=proto, port_class=port_class, dscp=dscp)


# ------------------------------------------------------------------ exact counts

def test_udp_v4_exact_bytes_packets_class_dscp_direction(lab, make_collector):
    c = loaded(lab, make_collector)
    lab.udp(100, 1000, 53, tos=0xb8, replies=10, reply_size=300)   # DSCP 46 (EF) to DNS
    lab.udp(50, 200, 5432)                                          # to PostgreSQL
    t0 = int(time.time())
    rows = c.scrape()
    dns_in = row(rows, "in", "dns", dscp=46)
    assert (dns_in["packets"], dns_in["bytes"]) == (100, 100 * (UDP4_HDR + 1000))
    # replies leave from port 53 to the client's ephemeral port: still "dns", DSCP 0
    dns_out = row(rows, "out", "dns", dscp=0)
    assert (dns_out["packets"], dns_out["bytes"]) == (10, 10 * (UDP4_HDR + 300))
    db_in = row(rows, "in", "db")
    assert (db_in["packets"], db_in["bytes"]) == (50, 50 * (UDP4_HDR + 200))
    assert not rows_for(rows, proto=17, direction="out", port_class="db")
    assert len(rows_for(rows, proto=17)) == 3, rows
    for r in rows:
        assert sorted(r) == sorted(trafficdata.HEADER)
        assert t0 <= r["ts"] <= t0 + 5
        assert r["link"] == LINK


@pytest.mark.parametrize("prefix_v6,want", [(48, "2001:db8:102::/48"), (128, CLI6 + "/128")])
def test_udp_v6_exact(lab, make_collector, prefix_v6, want):
    c = loaded(lab, make_collector, prefix_v6=prefix_v6)
    lab.udp(40, 500, 53, tos=0xb8, family=6, replies=5, reply_size=100)
    lab.udp(20, 64, 6379, family=6)
    rows = c.scrape()
    r = row(rows, "in", "dns", dscp=46, prefix=want)
    assert (r["packets"], r["bytes"]) == (40, 40 * (UDP6_HDR + 500))
    r = row(rows, "out", "dns", prefix=want)
    assert (r["packets"], r["bytes"]) == (5, 5 * (UDP6_HDR + 100))
    r = row(rows, "in", "cache", prefix=want)
    assert (r["packets"], r["bytes"]) == (20, 20 * (UDP6_HDR + 64))


def test_prefix_lengths_reconfigured_without_reload(lab, make_collector):
    """prefix_v4 is a map setting: changing it rewrites cfg and keeps the program."""
    c = loaded(lab, make_collector, prefix_v4=24)
    tags = [p["tag"] for p in c.status()["programs"]]
    for plen, want in ((32, CLI4 + "/32"), (16, "198.18.0.0/16"), (0, "0.0.0.0/0"), (24, "198.18.102.0/24")):
        c2 = make_collector(lab, name=c.name, prefix_v4=plen)
        res = c2.present()
        assert res["changed"] and "maps written: cfg" in res["notes"], res
        assert res["diff"]["before"]["prefix_v4"] != plen and res["diff"]["after"]["prefix_v4"] == plen
        lab.udp(7, 100, 5432)
        rows = c2.scrape()
        r = row(rows, "in", "db", prefix=want)
        assert (r["packets"], r["bytes"]) == (7, 7 * (UDP4_HDR + 100))
    assert [p["tag"] for p in c.status()["programs"]] == tags
    assert not c.present()["changed"]


def test_tcp_counts_segments_and_wire_bytes(lab, make_collector):
    """TCP over veth arrives as GSO packets: packets and bytes are those of the segments.

    The exact count is the sender's own: the client socket's tcpi_segs_out counts every
    segment it put on the wire (a GSO packet by its segments, as the collector does).  A
    busy machine legitimately adds to the bare data segments: retransmissions (a drop in a
    full backlog, a tail-loss probe) and segments cut short of the MSS when the send buffer
    drains in pieces; those are in segs_out too, so the check holds under load.  A segment
    dropped before the server's tc ingress (a full backlog queue) is in segs_out but never
    seen, and is retransmitted: at most total_retrans fewer.  The final ACK of the server's
    FIN may still be on its way when the count is read: + 1."""
    c = loaded(lab, make_collector)
    payload = 1000000
    sent = {}
    assert lab.tcp(payload, 5432, sender=sent) == payload
    rows = c.scrape()
    r = row(rows, "in", "db", proto=6)
    mss = 1448                                   # 1500 MTU, IPv4, TCP timestamps
    data_segments = -(-payload // mss)
    low = max(data_segments + 2, sent["segs_out"] - sent["total_retrans"])   # + SYN, handshake ACK
    assert low <= r["packets"] <= sent["segs_out"] + 1, (r, sent)
    # every packet carries 20 (IP) + 32 (TCP with timestamps; SYN 40) header bytes, and the
    # payload crosses at least once (retransmitted bytes on top)
    assert payload + 52 * r["packets"] <= r["bytes"], r
    assert r["bytes"] <= payload + 60 * r["packets"] + mss * sent["total_retrans"], (r, sent)
    acks = row(rows, "out", "db", proto=6)
    assert acks["packets"] >= 2 and acks["bytes"] >= 52 * acks["packets"]


def test_non_ip_frames_are_counted(lab, make_collector):
    c = loaded(lab, make_collector)
    talib.sh(talib.IP, "-n", lab.srv, "neigh", "flush", "dev", talib.SRV_IF)
    lab.udp(1, 10, 5432, replies=1, reply_size=10)   # the reply needs an ARP request and its answer
    rows = c.scrape()
    arp = rows_for(rows, prefix="-", proto=0, port_class="none", dscp=0)
    assert sorted(r["direction"] for r in arp) == ["in", "out"], rows
    assert all(r["bytes"] == 28 * r["packets"] for r in arp), arp   # ARP for IPv4 over Ethernet: 28 bytes


def test_interfaces_apart_and_an_l3_device_without_link_header(lab, make_collector):
    """Two interfaces, one program set: rows per interface.  On a tun device (no link-layer
    header) the bytes are still exactly the L3 bytes."""
    fd = lab.tun("tas9", "198.18.105.1/24")
    c = loaded(lab, make_collector, interfaces=[talib.SRV_IF, "tas9"])
    assert [p["function"] for p in c.status()["programs"]] == [
        "traffic_ingress_tas0", "traffic_egress_tas0", "traffic_ingress_tas9", "traffic_egress_tas9"]
    lab.udp(5, 100, 53)
    s = lab.sock(lab.srv, 4)
    try:
        for _i in range(4):
            s.sendto(b"e" * 100, ("198.18.105.2", 53))          # routed out through the tun device
    finally:
        s.close()
    assert talib.read_ipv4(fd, 4) == [128] * 4
    for _i in range(3):
        os.write(fd, talib.ipv4_udp("198.18.105.2", "198.18.105.1", 40000, 5432, b"i" * 50))
    time.sleep(0.2)
    rows = c.scrape()
    r = row(rows, "in", "dns")
    assert (r["packets"], r["bytes"]) == (5, 5 * (UDP4_HDR + 100))
    tun = [x for x in rows if x["link"] == "lab:tas9"]
    r = one(tun, direction="out", prefix="198.18.105.0/24", proto=17, port_class="dns")
    assert (r["packets"], r["bytes"]) == (4, 4 * (UDP4_HDR + 100))
    r = one(tun, direction="in", prefix="198.18.105.0/24", proto=17, port_class="db")
    assert (r["packets"], r["bytes"]) == (3, 3 * (UDP4_HDR + 50))


def test_extension_headers_and_fragments(lab, make_collector):
    """IPv6 extension headers are walked to the upper-layer protocol; fragments other than
    the first have no ports and count as class "none" under their protocol."""
    fd = lab.tun("tas9", "198.18.105.1/24")
    c = loaded(lab, make_collector, interfaces=["tas9"])
    src6, dst6 = "2001:db8:105::2", "2001:db8:105::1"
    hbh = struct.pack("!BB6s", 17, 0, b"\x01\x04\0\0\0\0")                  # hop-by-hop: PadN, next UDP
    dst_opts = struct.pack("!BB6s", 0, 0, b"\x01\x04\0\0\0\0")             # dest options, next hop-by-hop
    frag_first = struct.pack("!BBHI", 17, 0, 0x0001, 9)                          # offset 0, more fragments
    packets = [
        (talib.ipv6_udp(src6, dst6, 40000, 5432, b"a" * 20, hbh, first_next=0), 40 + 8 + 8 + 20),
        (talib.ipv6_udp(src6, dst6, 40000, 5432, b"b" * 20, dst_opts + hbh, first_next=60), 40 + 16 + 8 + 20),
        (talib.ipv6_udp(src6, dst6, 40000, 5432, b"c" * 20, frag_first, first_next=44), 40 + 8 + 8 + 20),
    ]
    later6 = struct.pack("!IHBB16s16s", 6 << 28, 8 + 24, 44, 64, socket.inet_pton(socket.AF_INET6, src6),
                         socket.inet_pton(socket.AF_INET6, dst6)) + struct.pack("!BBHI", 17, 0, 0x0008, 9) + b"d" * 24
    later4 = talib.ipv4_fragment("198.18.105.2", "198.18.105.1", 17, 185, b"e" * 40)
    for pkt, _n in packets:
        os.write(fd, pkt)
    os.write(fd, later6)
    os.write(fd, later4)
    time.sleep(0.2)
    rows = [r for r in c.scrape() if r["direction"] == "in"]
    r = one(rows, prefix="2001:db8:105::/48", proto=17, port_class="db")
    assert (r["packets"], r["bytes"]) == (3, sum(n for _p, n in packets))
    r = one(rows, prefix="2001:db8:105::/48", proto=17, port_class="none")
    assert (r["packets"], r["bytes"]) == (1, len(later6))
    r = one(rows, prefix="198.18.105.0/24", proto=17, port_class="none")
    assert (r["packets"], r["bytes"]) == (1, 60)


# ------------------------------------------------------------------ deltas and state

def test_deltas_and_state_file_survive_a_new_collector_object(lab, make_collector, session):
    c = loaded(lab, make_collector)
    lab.udp(20, 100, 53)
    r = row(c.scrape(), "in", "dns")
    assert r["packets"] == 20
    assert not rows_for(c.scrape(), proto=17)          # nothing new: no rows
    lab.udp(30, 100, 53)
    r = row(c.scrape(), "in", "dns")
    assert (r["packets"], r["bytes"]) == (30, 30 * (UDP4_HDR + 100))
    path = c.state_path()
    assert path.startswith(os.path.join(session["state_dir"], "traffic"))
    st = json.load(open(path))
    assert st["map_id"] and st["prev"]
    # An agent restart: a new object, same name and state dir; only the new traffic counts.
    lab.udp(5, 100, 53)
    c2 = make_collector(lab, name=c.name)
    r = row(c2.scrape(), "in", "dns")
    assert (r["packets"], r["bytes"]) == (5, 5 * (UDP4_HDR + 100))


def test_reload_keeps_the_baseline(lab, make_collector):
    """A changed flow table size reloads the program; the engine carries the counters over
    and the next scrape counts only the new traffic."""
    c = loaded(lab, make_collector)
    lab.udp(10, 100, 53)
    c.scrape()
    lab.udp(3, 100, 53)                                # counted in the old map, scraped after the reload
    c2 = make_collector(lab, name=c.name, max_flows=4096)
    res = c2.present()
    assert res["changed"] and res["action"] == "replace"
    assert any("flows (" in n for n in res["notes"]), res["notes"]
    assert c2.status()["max_flows"] == 4096
    lab.udp(4, 100, 53)
    r = row(c2.scrape(), "in", "dns")
    assert r["packets"] == 7


def test_reattach_after_the_filter_was_removed(lab, make_collector):
    c = loaded(lab, make_collector)
    lab.tc("filter", "del", "dev", talib.SRV_IF, "ingress", "pref", "1")
    assert not c.status()["attached"]
    res = c.present()
    assert res["changed"] and res["diff"]["before"]["attached"] is False
    assert c.status()["attached"]
    lab.udp(6, 100, 53)
    r = row(c.scrape(), "in", "dns")
    assert r["packets"] == 6


def _db_keys(c):
    with bpf.Map.pinned(c._map_path("flows")) as m:
        keys = [trafficcollect.decode_key(k) for k in m.keys()]
    return [k for k in keys if k["proto"] == 17 and trafficdata.CLASS_NAMES[k["port_class"]] == "db"]


def test_idle_entries_leave_the_map_and_come_back_exact(lab, make_collector):
    c = loaded(lab, make_collector, idle_scrapes=2)
    lab.udp(8, 100, 5432)
    assert row(c.scrape(), "in", "db")["packets"] == 8
    assert len(_db_keys(c)) == 1
    c.scrape()
    assert len(_db_keys(c)) == 1
    c.scrape()                                         # idle for 2 scrapes: removed
    assert _db_keys(c) == []
    assert c.counts["deleted"] >= 1
    lab.udp(9, 100, 5432)
    r = row(c.scrape(), "in", "db")
    assert (r["packets"], r["bytes"]) == (9, 9 * (UDP4_HDR + 100))


def test_overflow_when_the_map_is_full(lab, make_collector):
    c = loaded(lab, make_collector, max_flows=64)
    with bpf.Map.pinned(c._map_path("flows")) as m:
        filler = struct.pack(trafficcollect.VAL_FMT, 0, 0)
        n = 0
        while len(m.keys()) < 64:
            key = struct.pack(trafficcollect.KEY_FMT, 999, 0, 0, 0, 0, 0, 0, 0, struct.pack(">I", n) + b"\0" * 12)
            m.update(key, filler)
            n += 1
    lab.udp(5, 100, 5432)
    c.scrape()
    assert c.counts["overflow_packets"] >= 5
    assert c.counts["overflow_bytes"] >= 5 * (UDP4_HDR + 100)
    assert c.status()["overflow"]["packets"] >= 5


# ------------------------------------------------------------------ coexistence and removal

def test_absent_leaves_no_pins_no_clsact_no_state(lab, make_collector):
    c = loaded(lab, make_collector)
    assert "clsact" in lab.tc("qdisc", "show", "dev", talib.SRV_IF)
    assert os.path.isdir(c.pin_dir()) and os.path.exists(c.state_path())
    res = c.absent()
    assert res["changed"]
    assert not os.path.exists(c.pin_dir())
    assert not os.path.exists(c.state_path())
    assert "clsact" not in lab.tc("qdisc", "show", "dev", talib.SRV_IF)
    assert c.status() is None
    assert not c.absent()["changed"]
    with pytest.raises(NetstackError):
        c.scrape()


def test_absent_keeps_a_clsact_it_did_not_add(lab, make_collector):
    lab.tc("qdisc", "add", "dev", talib.SRV_IF, "clsact")
    c = loaded(lab, make_collector)
    c.absent()
    assert not os.path.exists(c.pin_dir())
    assert "clsact" in lab.tc("qdisc", "show", "dev", talib.SRV_IF)
    assert not lab.tc("filter", "show", "dev", talib.SRV_IF, "ingress").strip()
    assert not lab.tc("filter", "show", "dev", talib.SRV_IF, "egress").strip()


def test_chain_goes_on_and_priority_conflicts_are_refused(lab, make_collector, session):
    """The collector returns TC_ACT_UNSPEC: a filter after it still runs (here a loss emulator
    that drops everything).  A priority held by another program is refused, not replaced."""
    with open(os.path.join(talib.REPO, "bpf", "netpath.bpf.c")) as f:
        src = f.read()
    eng = bpf.Engine(state_dir=session["state_dir"])
    loss = "%s-%d-loss" % (talib.PREFIX, os.getpid())
    c = make_collector(lab)
    try:
        c.present()
        c.scrape()
        eng.present(loss, src, [{"function": "loss_emulator", "type": "sched_cls", "interface": talib.SRV_IF,
                                 "direction": "ingress", "netns": lab.srv, "priority": 2}])
        with bpf.Map.pinned(os.path.join(eng.pin_dir(loss), "maps", "cfg")) as m:
            m.update(struct.pack("=I", 0), struct.pack("=II", 0xffffffff, 0))
        assert lab.udp(3, 100, 5432, deliver=False) == 0     # all dropped, after the collector counted them
        r = row(c.scrape(), "in", "db")
        assert (r["packets"], r["bytes"]) == (3, 3 * (UDP4_HDR + 100))
        with pytest.raises(NetstackError) as e:
            make_collector(lab, priority=2).present()
        assert e.value.field == "priority"
    finally:
        eng.absent(loss)
    assert not os.path.exists(eng.pin_dir(loss))


def test_check_mode_changes_nothing(lab, make_collector):
    c = make_collector(lab)
    res = c.present(check_mode=True)
    assert res["changed"] and res["diff"]["before"] is None
    assert not os.path.exists(c.pin_dir())
    c.present()
    assert not c.present(check_mode=True)["changed"]
    assert make_collector(lab, name=c.name, prefix_v4=20).present(check_mode=True)["changed"]
    assert c.absent(check_mode=True)["changed"]
    assert os.path.exists(c.pin_dir())


def test_settings_are_checked_with_the_field_named(lab, scratch):
    for kw, field in (({"interfaces": []}, "interfaces"), ({"interfaces": ["a b"]}, "interfaces[0]"),
                      ({"interfaces": ["x"], "prefix_v4": 33}, "prefix_v4"),
                      ({"interfaces": ["x"], "prefix_v6": -1}, "prefix_v6"),
                      ({"interfaces": ["x"], "max_flows": 1}, "max_flows"),
                      ({"interfaces": ["x", "x"]}, "interfaces"), ({"interfaces": ["x"], "name": "a.b"}, "name")):
        with pytest.raises(NetstackError) as e:
            trafficcollect.Collector(**kw)
        assert e.value.field == field, (kw, e.value.field)
    with pytest.raises(NetstackError) as e:
        trafficcollect.Collector(name="tatest-nope", interfaces=["nosuchif0"], netns=lab.srv, state_dir=scratch).present()
    assert e.value.field == "interfaces"


# ------------------------------------------------------------------ the store and the loop

def _row(ts, **kw):
    r = {"ts": ts, "link": "h:eth0", "direction": "in", "prefix": "198.51.100.0/24", "proto": 17,
         "port_class": "dns", "dscp": 0, "bytes": 128, "packets": 1}
    r.update(kw)
    return r


def test_store_files_format_and_retention(scratch):
    path = os.path.join(scratch, "store")
    s = trafficcollect.Store(path, retention_days=2)
    day = 86400
    t = 1700006400                                   # 2023-11-15 00:00:00 UTC
    assert s.summary()["files"] == 0
    assert s.append([_row(t - 3 * day + 5), _row(t - day + 10, prefix="2001:db8::/48"), _row(t + 100), _row(t + 200)]) == 4
    assert s.append([_row(t + 300, direction="out", bytes=999, packets=3)]) == 1
    names = [os.path.basename(p) for p in s.files()]
    assert names == ["2023-11-12.csv", "2023-11-14.csv", "2023-11-15.csv"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    for p in s.files():
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    with open(os.path.join(path, "2023-11-15.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == ",".join(trafficdata.HEADER)
    assert lines[1:] == ["1700006500,h:eth0,in,198.51.100.0/24,17,dns,0,128,1",
                         "1700006600,h:eth0,in,198.51.100.0/24,17,dns,0,128,1",
                         "1700006700,h:eth0,out,198.51.100.0/24,17,dns,0,999,3"]
    with open(os.path.join(path, "2023-11-15.csv")) as f:
        assert [r["bytes"] for r in csv.DictReader(f)] == ["128", "128", "999"]
    summ = s.summary()
    assert (summ["files"], summ["rows"], summ["first_ts"], summ["last_ts"]) == (3, 5, t - 3 * day + 5, t + 300)
    assert summ["bytes"] == sum(os.path.getsize(p) for p in s.files())
    assert [os.path.basename(p) for p in s.files(since=t - day + 20)] == ["2023-11-14.csv", "2023-11-15.csv"]
    # retention 2 days: a day file goes once its day ended more than 2 days ago
    assert s.prune(now=t + 100) == [os.path.join(path, "2023-11-12.csv")]
    assert s.prune(now=t + 2 * day - 1) == []
    assert s.prune(now=t + 2 * day) == [os.path.join(path, "2023-11-14.csv")]
    assert [os.path.basename(p) for p in s.files()] == ["2023-11-15.csv"]
    with pytest.raises(NetstackError):
        trafficcollect.Store(path, retention_days=0)


def test_scrape_loop_into_a_store(lab, make_collector, scratch):
    import threading
    c = loaded(lab, make_collector)
    store = trafficcollect.Store(os.path.join(scratch, "store"))
    stop = threading.Event()
    seen = []
    t = threading.Thread(target=lambda: seen.append(trafficcollect.scrape_loop(c, store, 0.3, stop_event=stop)))
    t.start()
    try:
        lab.udp(12, 300, 53)
        time.sleep(0.8)
        lab.udp(13, 300, 53)
    finally:
        stop.set()
        t.join(20)
    assert seen and seen[0]["scrapes"] >= 2 and seen[0]["errors"] == 0
    rows = []
    for p in store.files():
        with open(p) as f:
            rows += list(csv.DictReader(f))
    dns = [r for r in rows if r["proto"] == "17" and r["port_class"] == "dns" and r["direction"] == "in"]
    assert sum(int(r["packets"]) for r in dns) == 25
    assert sum(int(r["bytes"]) for r in dns) == 25 * (UDP4_HDR + 300)
    # with a duration the loop ends by itself, scraping at the end
    res = trafficcollect.scrape_loop(c, store, 0.2, duration=0.5)
    assert res["scrapes"] >= 2 and res["errors"] == 0


# ------------------------------------------------------------------ the agent

def _agent(tmp, section):
    cfg = {"interval": 60, "state_dir": os.path.join(tmp, "state"), "log": os.path.join(tmp, "agent.log"),
           "metrics": {"port": 0}}
    with open(os.path.join(tmp, "agent.json"), "w") as f:
        json.dump(cfg, f)
    os.makedirs(os.path.join(tmp, "agent.d"), exist_ok=True)
    control.write_section(os.path.join(tmp, "agent.d"), "traffic", section)
    return daemon.Agent(config=os.path.join(tmp, "agent.json"), confd=os.path.join(tmp, "agent.d"),
                        pidfile=os.path.join(tmp, "agent.pid"), status=os.path.join(tmp, "status.json"))


def _dns_in(store):
    rows = []
    for p in trafficcollect.Store(store).files():
        with open(p) as f:
            rows += list(csv.DictReader(f))
    dns = [r for r in rows if r["proto"] == "17" and r["port_class"] == "dns" and r["direction"] == "in"
           and r["link"].endswith(":" + talib.SRV_IF)]
    return sum(int(r["packets"]) for r in dns), sum(int(r["bytes"]) for r in dns)


def test_agent_traffic_controller(lab, scratch):
    name = "%s-%d-agent" % (talib.PREFIX, os.getpid())
    store = os.path.join(scratch, "store")
    sec = {"state": "present", "name": name, "interfaces": [talib.SRV_IF], "netns": lab.srv, "interval": 1,
           "store": store, "retention_days": 3}
    a = _agent(scratch, sec)
    ctl = a.controllers["traffic"]
    try:
        a.reconcile("test start")
        assert a.last["traffic"]["ok"], a.last
        assert a.last["traffic"]["result"] == {"state": "present", "changed": True}
        assert ctl.worker.alive()
        lab.udp(11, 400, 53)
        deadline = time.time() + 10
        while time.time() < deadline and _dns_in(store)[0] < 11:
            time.sleep(0.2)
        assert _dns_in(store) == (11, 11 * (UDP4_HDR + 400))
        a.reconcile("periodic check")
        assert a.last["traffic"]["result"]["changed"] is False
        text = a.metrics_text()
        assert '# TYPE netstack_traffic_bytes_total counter' in text
        assert 'netstack_traffic_bytes_total{collector="%s",interface="%s",direction="in"}' % (name, talib.SRV_IF) in text
        assert 'netstack_traffic_scrape_errors_total{collector="%s"} 0' % name in text
        # The pins removed by hand come back at the next reconcile.
        bpf.Engine(state_dir=os.path.join(scratch, "state")).absent(name)
        a.reconcile("periodic check")
        assert a.last["traffic"]["ok"] and a.last["traffic"]["result"]["changed"] is True
        lab.udp(2, 400, 53)
        control.write_section(os.path.join(scratch, "agent.d"), "traffic", {"state": "absent", "name": name})
        assert a.reload()
        assert a.last["traffic"]["result"] == {"state": "absent", "changed": True}
        assert ctl.worker.thread is None and not ctl.worker.alive()
        assert not os.path.exists(os.path.join(bpf.PIN_ROOT, name))
        # the 11 datagrams exactly once; the last 2 were scraped when the section went absent
        assert _dns_in(store) == (13, 13 * (UDP4_HDR + 400))
        log = [json.loads(ln) for ln in open(os.path.join(scratch, "agent.log"))]
        assert [ln["what"] for ln in log if ln["controller"] == "traffic"][:1] == [
            "loaded the traffic collector on %s" % talib.SRV_IF]
    finally:
        for c in a.controllers.values():
            if hasattr(c, "close"):
                c.close()
        bpf.Engine(state_dir=os.path.join(scratch, "state")).absent(name)


def test_agent_config_traffic_section(scratch):
    a = {"state": "present", "interfaces": ["eth0"]}
    cfg = agent_config.validate({"traffic": a})
    s = trafficcollect.agent_settings(cfg["traffic"], cfg["state_dir"])
    assert s["store"] == "/var/lib/netstack/traffic/store" and s["interval"] == 10 and s["prefix_v4"] == 24
    for bad, field in (({"state": "present"}, "traffic.interfaces"),
                       (dict(a, prefix_v4=33), "traffic.prefix_v4"),
                       (dict(a, interval=0.5), "traffic.interval"),
                       (dict(a, store="relative"), "traffic.store"),
                       (dict(a, retention_days=0), "traffic.retention_days")):
        with pytest.raises(NetstackError) as e:
            agent_config.validate({"traffic": bad})
        assert e.value.field == field, (bad, e.value.field)
