"""Unit tests: the zero-copy check engine (zerocopy.py) and its report (zcreport.py).

The analysis (crossover, recommendations, cell summaries) runs on cells written here with
known answers; the probes, the C helper, the Python fallback and the peer control protocol
run for real on this machine's loopback (short runs), since nothing needs faking there.
"""
import json
import os
import socket
import threading

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.zerocopy import report as zcreport, measure as z
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from htmlcheck import IMG, IMG_SQ, SCRIPT, assert_inert

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = open(os.path.join(ROOT, "src", "zc_bench.c")).read()


# --------------------------------------------------------------------------- input

@pytest.mark.parametrize("text,n", [(4096, 4096), ("4K", 4096), ("4k", 4096), ("64KiB", 65536), ("1M", 1 << 20),
                                    ("1MB", 1 << 20), (" 512 ", 512), ("100B", 100), ("16M", 16 << 20)])
def test_parse_size(text, n):
    assert z.parse_size(text, "sizes[0]") == n


@pytest.mark.parametrize("bad", [0, -1, "0K", "17M", "12Q", "4 K B", "", True, "1G", "0x10"])
def test_parse_size_rejects_naming_the_field(bad):
    with pytest.raises(NetstackError) as e:
        z.parse_size(bad, "sizes[3]")
    assert e.value.field == "sizes[3]"


def test_validate_defaults_sort_and_dedupe():
    p = z.validate({"sizes": ["64K", 1024, "1K", "4K"], "modes": ["copy", "copy", "msg_zerocopy"]})
    assert p["sizes"] == [1024, 4096, 65536]
    assert p["modes"] == ["copy", "msg_zerocopy"]
    assert p["paths"] == ["loopback", "veth"] and p["repeats"] == 3
    assert z.validate(p) == p  # validated parameters validate to themselves


@pytest.mark.parametrize("params,field", [
    ({"paths": ["loopback", "wan"]}, "paths[1]"), ({"protocols": []}, "protocols"), ({"modes": ["zerocopy"]}, "modes[0]"),
    ({"sizes": []}, "sizes"), ({"duration": "fast"}, "duration"), ({"repeats": 0}, "repeats"),
    ({"queue_depth": 1000}, "queue_depth"), ({"implementation": "rust"}, "implementation"),
    ({"netns_prefix": "a/b"}, "netns_prefix"), ({"paths": ["peer"]}, "peer"),
    ({"paths": ["peer"], "peer": "no-such-host.invalid"}, "peer"), ({"receiver_cpu": 99999}, "receiver_cpu"),
    ({"bogus": 1}, "bogus"), ({"margin": 1.5}, "margin"), ({"repeats": True}, "repeats")])
def test_validate_names_the_field(params, field):
    with pytest.raises(NetstackError) as e:
        z.validate(params)
    assert e.value.field == field


def test_validate_resolves_the_peer():
    p = z.validate({"paths": ["peer"], "peer": "localhost"})
    assert p["peer_address"] in ("127.0.0.1", "::1")


# --------------------------------------------------------------------------- analysis

def _cell(path, proto, size, mode, gbps, cpu=1.0, copied=None, status="ok"):
    runs = [{"throughput_gbps": g, "sender_cpu_s_per_gb": cpu, "receiver_cpu_s_per_gb": 0.5, "sends": 100,
             "completions": 100 if mode in z.ZEROCOPY_MODES else 0, "notifications": 10 if mode in z.ZEROCOPY_MODES else 0,
             "errqueue_reads": 10, "copied": int(100 * (copied or 0)), "enobufs": 0, "short_sends": 0,
             "copied_known": mode in z.ZEROCOPY_MODES, "loss_fraction": 0.0} for g in gbps]
    if status != "ok":
        return {"path": path, "proto": proto, "size": size, "mode": mode, "status": status, "reason": "x"}
    c = z.summarize_cell((path, proto, size, mode), runs)
    c["per_run"] = runs
    return c


def _table(zc_gain, copied=0.0, path="peer"):
    """copy at 10 Gbit/s; msg_zerocopy at 10 * gain[size] per repeat."""
    cells = []
    for size, gains in zc_gain.items():
        cells.append(_cell(path, "tcp", size, "copy", [10.0, 10.0, 10.0], cpu=1.0))
        cells.append(_cell(path, "tcp", size, "msg_zerocopy", [10.0 * g for g in gains], cpu=1.0 / gains[1],
                           copied=copied))
    return cells


def test_crossover_is_the_smallest_size_that_wins_at_every_larger_size():
    cells = _table({4096: (0.7, 0.8, 0.75), 16384: (0.98, 1.02, 1.0), 65536: (1.2, 1.3, 1.25),
                    262144: (1.5, 1.4, 1.6)})
    x = z.crossover(cells, 0.05)[("peer", "tcp", "msg_zerocopy")]
    assert x["size"] == 65536
    assert x["ratios"][4096] == pytest.approx(0.75)
    assert x["ratios"][262144] == pytest.approx(1.5)
    cpu = z.crossover(cells, 0.05, "sender_cpu")[("peer", "tcp", "msg_zerocopy")]
    assert cpu["size"] == 65536 and cpu["ratios"][262144] == pytest.approx(1.4)  # CPU/GB 1/1.4 of copy


def test_a_loss_at_a_larger_size_moves_the_crossover_up():
    cells = _table({4096: (1.2, 1.2, 1.2), 16384: (0.9, 0.9, 0.9), 65536: (1.3, 1.3, 1.3)})
    assert z.crossover(cells, 0.05)[("peer", "tcp", "msg_zerocopy")]["size"] == 65536


def test_no_crossover_when_the_margin_is_never_met():
    cells = _table({4096: (1.0, 1.04, 1.02), 65536: (1.01, 1.03, 1.04)})
    assert z.crossover(cells, 0.05)[("peer", "tcp", "msg_zerocopy")]["size"] is None
    assert z.crossover(cells, 0.0)[("peer", "tcp", "msg_zerocopy")]["size"] == 4096


def test_crossover_pairs_runs_of_the_same_repeat():
    # zerocopy wins in every repeat by 10% although the repeats drift (a noisy machine)
    cells = [_cell("peer", "tcp", 65536, "copy", [5.0, 10.0, 20.0]),
             _cell("peer", "tcp", 65536, "msg_zerocopy", [5.5, 11.0, 22.0], copied=0.0)]
    x = z.crossover(cells, 0.05)[("peer", "tcp", "msg_zerocopy")]
    assert x["ratios"][65536] == pytest.approx(1.1) and x["size"] == 65536


def test_io_uring_zc_is_judged_against_io_uring_send():
    cells = [_cell("peer", "tcp", 65536, "copy", [20.0] * 3), _cell("peer", "tcp", 65536, "io_uring", [10.0] * 3),
             _cell("peer", "tcp", 65536, "io_uring_zc", [12.0] * 3, copied=0.0)]
    x = z.crossover(cells, 0.05)[("peer", "tcp", "io_uring_zc")]
    assert x["ratios"][65536] == pytest.approx(1.2)


def test_recommendation_copies_by_design_beats_any_win():
    cells = _table({65536: (1.3, 1.3, 1.3)}, copied=1.0, path="loopback")
    p = {"margin": 0.05, "paths": ["loopback"], "protocols": ["tcp"]}
    cross, recs = z.analyse(cells, p)
    assert recs["loopback"]["tcp"]["verdict"] == "copies-by-design"
    assert "100%" in recs["loopback"]["tcp"]["text"]
    assert cross["loopback"]["tcp"]["msg_zerocopy"]["min_copied_fraction"] == 1.0
    assert "not a zerocopy win" in zcreport.markdown({"cells": cells, "crossover": cross, "recommendations": recs})


def test_recommendation_zerocopy_names_mode_and_size():
    cells = _table({4096: (0.8, 0.8, 0.8), 65536: (1.3, 1.3, 1.3), 1 << 20: (1.6, 1.6, 1.6)})
    _cross, recs = z.analyse(cells, {"margin": 0.05, "paths": ["peer"], "protocols": ["tcp"]})
    assert recs["peer"]["tcp"]["verdict"] == "zerocopy"
    assert "msg_zerocopy" in recs["peer"]["tcp"]["text"] and "64K" in recs["peer"]["tcp"]["text"]


def test_recommendation_copy_when_nothing_wins():
    cells = _table({4096: (0.8, 0.8, 0.8), 65536: (0.9, 0.95, 0.9)})
    _cross, recs = z.analyse(cells, {"margin": 0.05, "paths": ["peer"], "protocols": ["tcp"]})
    assert recs["peer"]["tcp"]["verdict"] == "copy"


def test_summarize_cell():
    runs = [{"throughput_gbps": g, "sender_cpu_s_per_gb": 1.0, "receiver_cpu_s_per_gb": None, "sends": 10,
             "completions": c, "notifications": 2, "errqueue_reads": 2, "copied": c, "enobufs": 1, "short_sends": 0,
             "copied_known": True, "loss_fraction": 0.0} for g, c in ((1.0, 10), (3.0, 10), (2.0, 8))]
    c = z.summarize_cell(("veth", "udp", 4096, "msg_zerocopy"), runs)
    assert c["throughput_gbps"] == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert c["receiver_cpu_s_per_gb"]["median"] is None
    assert c["completions"] == 28 and c["completions_per_notification"] == pytest.approx(28 / 6)
    assert c["copied_fraction"] == 1.0 and c["completions_missing"] == 2 and c["enobufs"] == 3
    copy = z.summarize_cell(("veth", "udp", 4096, "copy"), runs)
    assert copy["copied_fraction"] is None and copy["completions_missing"] == 0


def test_unsupported_modes_from_the_probe():
    kernel = {"so_zerocopy": True, "io_uring": True, "io_uring_send_zc": False, "zc_cmsg": "no: EINVAL"}
    out = z.unsupported_modes(kernel, z.CHelper("/bin/false"))
    assert set(out) == {"io_uring_zc", "zc_cmsg"} and "no: EINVAL" in out["zc_cmsg"]
    assert set(z.unsupported_modes(dict(kernel, io_uring_send_zc=True, zc_cmsg="yes"), z.PyHelper())) == \
        {"io_uring", "io_uring_zc"}


# --------------------------------------------------------------------------- report

def test_report_html_and_markdown():
    cells = _table({4096: (0.8, 0.8, 0.8), 65536: (1.3, 1.3, 1.3)})
    cells.append(_cell("peer", "tcp", 4096, "zc_cmsg", [], status="unsupported"))
    cross, recs = z.analyse(cells, {"margin": 0.05, "paths": ["peer"], "protocols": ["tcp"]})
    result = {"cells": cells, "crossover": cross, "recommendations": recs, "kernel": {"release": "6.x"},
              "implementation": {"kind": "c"}, "notes": ["a note"]}
    page = zcreport.html({"h<1>": result, "h2": {"failed": True, "msg": "unreachable"}})
    assert "h&lt;1&gt;" in page and "h<1>" not in page
    assert "failed: unreachable" in page and page.count("<svg") == 2 and "a note" in page
    md = zcreport.markdown(result, "h1")
    assert "| 64K |" in md and "zc_cmsg` unsupported" in md and "**zerocopy**" in md


def test_report_hostile_values_show_as_text_never_as_markup():
    """Host names, kernel strings, verdicts (also in a class attribute), reasons, messages and
    notes are escaped by the page's template (autoescape)."""
    cells = _table({4096: (0.8, 0.8, 0.8), 65536: (1.3, 1.3, 1.3)})
    cells.append(_cell("peer", "tcp", 4096, "zc_cmsg", [], status="unsupported"))
    cells[-1]["reason"] = SCRIPT
    cross, recs = z.analyse(cells, {"margin": 0.05, "paths": ["peer"], "protocols": ["tcp"]})
    recs["peer"]["tcp"].update(verdict=IMG_SQ, text=SCRIPT)
    result = {"cells": cells, "crossover": cross, "recommendations": recs, "notes": [IMG],
              "kernel": {"release": IMG, "zc_cmsg": IMG_SQ}, "implementation": {"kind": SCRIPT}}
    page = zcreport.html({SCRIPT: result, IMG: {"failed": True, "msg": IMG_SQ}}, title=IMG)
    assert_inert(page, SCRIPT, IMG, IMG_SQ)
    assert "<span class='verdict-&#39;&gt;&lt;img src=x onerror=alert(2)&gt;'>" in page
    assert page.count("<svg") == 2 and "crossover: msg_zerocopy vs copy" in page


# --------------------------------------------------------------------------- I/O and the real kernel

def test_lines_times_out_and_returns_a_last_unterminated_line():
    r, w = os.pipe()
    lines = z.Lines(r)
    with pytest.raises(NetstackError, match="no answer"):
        lines.next(0.05, "receiver")
    os.write(w, b"listening 5\n{\"a\": 1}")
    os.close(w)
    assert lines.next(1, "receiver") == "listening 5"
    assert lines.next(1, "receiver") == '{"a": 1}'
    with pytest.raises(NetstackError, match="exited"):
        lines.next(1, "receiver")
    os.close(r)


@pytest.fixture(scope="module")
def chelper(tmp_path_factory):
    helper, why = z.build_c_helper(SOURCE, str(tmp_path_factory.mktemp("zc")))
    assert helper, why  # the project installs a compiler (scripts/bootstrap.sh)
    return helper


def test_probe_agrees_between_c_and_python(chelper):
    c, py = chelper.probe(), z.PyHelper().probe()
    assert c["so_zerocopy"] is True and py["so_zerocopy"] is True
    assert c["zc_cmsg"].split(":")[0] == py["zc_cmsg"].split(":")[0]


@pytest.mark.parametrize("kind", ["c", "python"])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_one_run_counts_bytes_and_completions(chelper, kind, proto):
    helper = chelper if kind == "c" else z.PyHelper()
    p = z.validate({"duration": 0.15})
    tx, rx = z.one_run(helper, p, "loopback", proto, 8192, "msg_zerocopy")
    assert tx["status"] == "ok" and rx["status"] == "ok"
    assert tx["sends"] > 0 and tx["completions"] == tx["sends"] and tx["copied"] == tx["completions"]
    assert 0 < tx["notifications"] <= tx["completions"]
    if proto == "tcp":
        assert rx["bytes"] == tx["bytes"] == tx["sends"] * 8192
    else:
        assert rx["bytes"] <= tx["bytes"] and rx["bytes"] % 8192 == 0
    m = z.run_metrics(tx, rx)
    assert m["throughput_gbps"] > 0 and m["sender_cpu_s_per_gb"] > 0


def test_udp_above_the_datagram_limit_is_refused_by_the_helper(chelper):
    p = z.validate({"duration": 0.1})
    tx, rx = z.one_run(chelper, p, "loopback", "udp", 70000, "copy")
    assert tx["status"] == "error" and tx["where"] == "size" and rx is None


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_peer_protocol_serves_runs_and_finishes(chelper):
    port = _free_port()
    out = {}
    t = threading.Thread(target=lambda: out.update(z.serve(chelper, "127.0.0.1", port, clients=1, timeout=30)))
    t.start()
    try:
        for _i in range(50):
            try:
                assert z.peer_request("127.0.0.1", port, "hello")["ok"]
                break
            except NetstackError:
                threading.Event().wait(0.05)
        p = z.validate({"paths": ["peer"], "peer": "127.0.0.1", "peer_port": port, "duration": 0.1})
        tx, rx = z.one_run(chelper, p, "peer", "tcp", 4096, "copy")
        assert tx["status"] == rx["status"] == "ok" and rx["bytes"] == tx["bytes"]
        z.peer_request("127.0.0.1", port, "done")
    finally:
        t.join(30)
    assert out == {"served": 1, "clients_done": 1, "stopped": False, "timed_out": False}


def test_peer_that_is_not_zerocopy_serve_is_named():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)

    def answer():
        c = ls.accept()[0]
        c.recv(100)
        c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        c.close()
    t = threading.Thread(target=answer)
    t.start()
    try:
        with pytest.raises(NetstackError) as e:
            z.peer_request("127.0.0.1", ls.getsockname()[1], "hello")
        assert e.value.field == "peer" and "not zerocopy_test serve" in str(e.value)
    finally:
        t.join(5)
        ls.close()


def test_stop_serving_without_a_server_is_not_an_error():
    assert z.stop_serving({"listen_address": "127.0.0.1", "peer_port": _free_port()}) == \
        {"changed": False, "stopped": False, "msg": "no server answered"}


def test_result_is_json_serialisable():
    r = z.zerocopy_test({"paths": ["loopback"], "protocols": ["tcp"], "sizes": ["4K"], "modes": ["copy"],
                         "duration": 0.1, "repeats": 1}, SOURCE)
    assert json.loads(json.dumps(r))["cells"][0]["status"] == "ok"
    assert not [d for d in os.listdir("/tmp") if d.startswith("netstack-zc-")]


def test_hello_waits_for_a_peer_whose_server_is_still_starting():
    """A ring's servers start in the background while other hosts already measure: a
    refused hello is tried again for a while, then fails naming the peer."""
    import time as _time
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    got = {}

    def late_server():
        _time.sleep(1.0)
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        srv.listen(1)
        conn, _a = srv.accept()
        got["line"] = conn.makefile("rb").readline()
        conn.sendall(b'{"ok": true}\n')
        conn.close()
        srv.close()

    t = threading.Thread(target=late_server)
    t.start()
    start = _time.time()
    answer = z.peer_request("127.0.0.1", port, "hello", refused_wait=10)
    t.join()
    assert answer == {"ok": True} and b"hello" in got["line"]
    assert 0.9 < _time.time() - start < 9
    with pytest.raises(NetstackError) as e:
        z.peer_request("127.0.0.1", port, "hello", refused_wait=0.5)
    assert e.value.field == "peer" and "not reachable" in str(e.value)
