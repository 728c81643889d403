"""Unit tests of the HTTP benchmark engine (plugins/module_utils/tuning/httpbench.py).

Parsing uses wrk output recorded on this machine with the shipped Lua hook; aggregation,
template rendering (Jinja2 and the minimal renderer) and validation are pure.  The lab
tests run the real thing (namespaces, veth, nginx, wrk) for a couple of seconds and
check that nothing is left behind; they are skipped without root or the tools.
"""
import os
import re
import signal
import subprocess
import tempfile
import time

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.tuning import httpbench as hb
from ansible_collections.netstack.tuning.plugins.module_utils.core import nsutil, stats
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, which

# ------------------------------------------------------------------ recorded wrk output

STATIC_SAMPLE = """Running 1s test @ http://127.0.0.1:18080/payload
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   110.07us   98.43us   3.11ms   97.91%
    Req/Sec    36.87k     2.26k   39.56k    54.55%
  40229 requests in 1.10s, 48.49MB read
Requests/sec:  36596.57
Transfer/sec:     44.11MB
NETSTACK_WRK_JSON {"requests":40229,"duration_us":1099256,"bytes":50849256,"errors":{"connect":0,"read":0,"write":0,\
"status":0,"timeout":0},"latency_us":{"min":30,"max":3107,"mean":110.06865810170486,"stdev":98.43249840718434,"p50":97,\
"p90":145,"p99":249,"p99_9":2017},"thread_rps":{"mean":36873.272727272728,"stdev":2259.9255780184044,"max":39565}}
"""

STATUS_ERRORS_SAMPLE = """Running 1s test @ http://127.0.0.1:18080/missing
  1 threads and 2 connections
  39062 requests in 1.10s, 11.47MB read
  Non-2xx or 3xx responses: 39062
Requests/sec:  35467.86
NETSTACK_WRK_JSON {"requests":39062,"duration_us":1101335,"bytes":12030906,"errors":{"connect":0,"read":0,"write":0,\
"status":39062,"timeout":0},"latency_us":{"min":24,"max":5194,"mean":110.16565837980906,"stdev":343.06283281734022,\
"p50":46,"p90":92,"p99":1889,"p99_9":4186},"thread_rps":{"mean":35785.181818181816,"stdev":5141.2981982799211,"max":40222}}
"""

# What wrk's histogram reports when nothing completed: min is 2^64-1, percentiles are 0,
# and the hook writes NaN as null.
NO_REQUESTS_SAMPLE = """NETSTACK_WRK_JSON {"requests":0,"duration_us":2004311,"bytes":0,"errors":{"connect":4,"read":0,\
"write":0,"status":0,"timeout":0},"latency_us":{"min":1.8446744073709552e+19,"max":0,"mean":0,"stdev":0,"p50":0,"p90":0,\
"p99":0,"p99_9":0},"thread_rps":{"mean":0,"stdev":0,"max":0}}
"""


def test_parse_static_sample():
    r = hb.parse_wrk_output(STATIC_SAMPLE)
    assert r["requests"] == 40229
    assert r["duration_s"] == pytest.approx(1.099256)
    assert r["bytes"] == 50849256
    assert r["requests_per_sec"] == pytest.approx(40229 / 1.099256, rel=1e-6)
    assert r["latency_us"] == {"p50": 97, "p90": 145, "p99": 249, "p99_9": 2017, "mean": 110.069,
                               "stdev": 98.432, "min": 30, "max": 3107}
    assert r["errors"] == {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0, "total": 0}
    assert r["thread_requests_per_sec"]["max"] == 39565


def test_parse_counts_status_errors():
    r = hb.parse_wrk_output(STATUS_ERRORS_SAMPLE)
    assert r["errors"]["status"] == 39062
    assert r["errors"]["total"] == 39062
    assert r["latency_us"]["p99_9"] == 4186


def test_parse_without_completed_requests_has_no_latency():
    r = hb.parse_wrk_output(NO_REQUESTS_SAMPLE)
    assert r["requests"] == 0 and r["requests_per_sec"] == 0
    assert all(v is None for v in r["latency_us"].values())
    assert r["errors"]["connect"] == 4 and r["errors"]["total"] == 4


def test_parse_takes_the_last_marker_line_and_ignores_wrk_text():
    two = STATIC_SAMPLE + STATUS_ERRORS_SAMPLE
    assert hb.parse_wrk_output(two)["requests"] == 39062


@pytest.mark.parametrize("text", ["", "Running 1s test\nRequests/sec: 1\n", "NETSTACK_WRK_JSON {not json"])
def test_parse_failures_name_wrk(text):
    with pytest.raises(NetstackError) as e:
        hb.parse_wrk_output(text)
    assert e.value.field == "wrk"


def test_lua_hook_prints_every_field_the_parser_reads():
    for key in ("summary.requests", "summary.duration", "summary.bytes", "e.connect", "e.read", "e.write",
                "e.status", "e.timeout", "latency:percentile(50)", "latency:percentile(90)",
                "latency:percentile(99)", "latency:percentile(99.9)", "latency.mean", "latency.stdev",
                "latency.max", "latency.min"):
        assert key in hb.WRK_LUA
    assert hb.MARKER.strip() in hb.WRK_LUA
    assert "done = function(summary, latency, requests)" in hb.WRK_LUA


# ------------------------------------------------------------------ aggregation

def _run(p50, p99, rps, errors=0, requests=1000, p99_9=None):
    return {"requests": requests, "duration_s": 1.0, "bytes": 0, "requests_per_sec": rps,
            "latency_us": {"p50": p50, "p90": p50, "p99": p99, "p99_9": p99_9 if p99_9 is not None else p99,
                           "mean": p50, "stdev": 1.0, "min": 1, "max": p99},
            "errors": {"connect": errors, "read": 0, "write": 0, "status": 0, "timeout": 0, "total": errors},
            "thread_requests_per_sec": {"mean": rps, "stdev": 0, "max": rps}}


def test_quantile_is_linear_interpolation():
    # spread() uses the engine's one quantile (stats.quantile, NumPy's default 'type 7')
    assert stats.quantile([1, 2, 3, 4], 0.5) == 2.5
    assert stats.quantile([4, 1, 3, 2], 0.25) == 1.75
    assert stats.quantile([4, 1, 3, 2], 0.75) == 3.25
    assert stats.quantile([7], 0.9) == 7
    with pytest.raises(ValueError):
        stats.quantile([], 0.5)


def test_aggregate_medians_spread_and_totals():
    runs = [_run(100, 300, 1000.0, errors=1), _run(120, 100, 3000.0), _run(90, 200, 2000.0, errors=2),
            _run(110, 400, 4000.0)]
    a = hb.aggregate(runs)
    assert a["latency_us"]["p50"] == 105            # median of 90 100 110 120
    assert a["latency_us"]["p99"] == 250            # median of 100 200 300 400
    assert a["spread"]["latency_us"]["p99"] == {"min": 100, "max": 400, "iqr": 150}  # 325 - 175
    assert a["requests_per_sec"] == 2500
    assert a["spread"]["requests_per_sec"] == {"min": 1000, "max": 4000, "iqr": 1500}
    assert a["errors"]["connect"] == 3 and a["errors"]["total"] == 3
    assert a["requests"] == 4000
    assert a["error_ratio"] == pytest.approx(3 / 4003.0, abs=1e-6)
    assert a["repeats"] == 4
    assert [r["repeat"] for r in a["runs"]] == [1, 2, 3, 4]
    assert a["runs"][0]["latency_us"]["p99"] == 300  # raw list kept as measured


def test_aggregate_single_run_has_zero_iqr_and_odd_count_takes_middle():
    one = hb.aggregate([_run(100, 300, 1000.0)])
    assert one["latency_us"]["p99"] == 300
    assert one["spread"]["latency_us"]["p99"] == {"min": 300, "max": 300, "iqr": 0}
    three = hb.aggregate([_run(1, 10, 1.0), _run(2, 30, 2.0), _run(3, 20, 3.0)])
    assert three["latency_us"]["p99"] == 20
    assert three["spread"]["latency_us"]["p99"]["iqr"] == 10  # 25 - 15


def test_aggregate_skips_runs_without_latency():
    empty = hb.parse_wrk_output(NO_REQUESTS_SAMPLE)
    a = hb.aggregate([empty, _run(100, 300, 1000.0)])
    assert a["latency_us"]["p99"] == 300
    assert a["errors"]["connect"] == 4
    assert hb.aggregate([empty])["latency_us"]["p50"] is None


def test_aggregate_needs_runs():
    with pytest.raises(NetstackError) as e:
        hb.aggregate([])
    assert e.value.field == "repeats"


# ------------------------------------------------------------------ nginx configuration

def _vars(mode, user="nobody nogroup", prefix="/tmp/netstack-httpbench-1-abc"):
    return hb.nginx_variables(prefix, mode, "2", 16, worker_user=user)


@pytest.mark.parametrize("mode", ["static", "proxy"])
@pytest.mark.parametrize("user", ["nobody nogroup", None])
def test_minimal_renderer_matches_jinja2(mode, user):
    pytest.importorskip("jinja2")
    v = _vars(mode, user)
    assert hb.render_nginx_conf(v, use_jinja2=True) == hb.render_nginx_conf(v, use_jinja2=False)


@pytest.mark.parametrize("use_jinja2", [True, False])
def test_static_config(use_jinja2):
    if use_jinja2:
        pytest.importorskip("jinja2")
    conf = hb.render_nginx_conf(_vars("static"), use_jinja2=use_jinja2)
    assert "user nobody nogroup;" in conf
    assert "worker_processes 2;" in conf
    assert "listen 198.18.100.1:80 backlog=511;" in conf
    assert "root /tmp/netstack-httpbench-1-abc/www;" in conf
    assert "upstream" not in conf and "proxy_pass" not in conf
    assert "{{" not in conf and "{%" not in conf


@pytest.mark.parametrize("use_jinja2", [True, False])
def test_proxy_config(use_jinja2):
    if use_jinja2:
        pytest.importorskip("jinja2")
    conf = hb.render_nginx_conf(_vars("proxy", user=None), use_jinja2=use_jinja2)
    assert "user " not in conf
    assert "upstream netstack_upstream {" in conf
    assert "server 127.0.0.1:8081;" in conf and "listen 127.0.0.1:8081;" in conf
    assert "proxy_pass http://netstack_upstream;" in conf
    assert 'proxy_set_header Connection "";' in conf
    # the front server proxies; only the upstream block has the document root
    front = conf[conf.index("listen 198.18.100.1"):]
    assert "root " not in front


@pytest.mark.parametrize("mode", ["static", "proxy"])
def test_every_path_in_the_config_is_under_the_prefix(mode):
    prefix = "/tmp/netstack-httpbench-1-abc"
    conf = hb.render_nginx_conf(_vars(mode, prefix=prefix), use_jinja2=False)
    paths = re.findall(r"(?<![\w:/])(/[\w./-]+)", conf)
    paths = [p for p in paths if p != hb.PAYLOAD_PATH and not p.startswith("//")]
    assert paths and all(p == prefix or p.startswith(prefix + "/") for p in paths), paths


@pytest.mark.root
@pytest.mark.skipif(not which("nginx"), reason="nginx not installed")
@pytest.mark.parametrize("mode", ["static", "proxy"])
@pytest.mark.parametrize("use_jinja2", [True, False])
def test_nginx_accepts_the_rendered_config(mode, use_jinja2, tmp_path):
    if use_jinja2:
        pytest.importorskip("jinja2")
    prefix = str(tmp_path)
    for d in ("www", "logs", "tmp"):
        os.mkdir(os.path.join(prefix, d))
    v = hb.nginx_variables(prefix, mode, "1", 8, listen_addr="127.0.0.1", port=18089, worker_user=hb._worker_user())
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(hb.render_nginx_conf(v, use_jinja2=use_jinja2))
    p = subprocess.run([which("nginx"), "-t", "-p", prefix + "/", "-c", conf, "-e", os.path.join(prefix, "logs", "e.log")],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr


def test_minimal_renderer_semantics_and_errors():
    t = 'a {{ x }}\n{% if m == "p" %}\nP\n{% if y %}\nPY\n{% else %}\nPN\n{% endif %}\n{% else %}\nS\n{% endif %}\nz\n'
    assert hb.render_minimal(t, {"x": 1, "m": "p", "y": ""}) == "a 1\nP\nPN\nz\n"
    assert hb.render_minimal(t, {"x": 1, "m": "s", "y": "1"}) == "a 1\nS\nz\n"
    for bad, variables in (("{{ nope }}\n", {}), ("{% for i in x %}\n", {"x": 1}), ("{% if x %}\n", {"x": 1}),
                           ("a {% if x %}b{% endif %}\n", {"x": 1}), ("{% endif %}\n", {})):
        with pytest.raises(NetstackError) as e:
            hb.render_minimal(bad, variables)
        assert e.value.field == "template"


def test_payload_is_the_requested_size():
    for n in (0, 1, 1024, 100000):
        assert len(hb.payload_bytes_of(n)) == n


def test_worker_connections_cover_proxy_connections():
    v = hb.nginx_variables("/p", "proxy", "auto", 5000)
    assert v["worker_connections"] >= 2 * 5000 and v["rlimit_nofile"] > v["worker_connections"]


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize("params,field", [
    ({"connections": 1, "threads": 2}, "connections"),
    ({"duration": 0}, "duration"),
    ({"duration": -3}, "duration"),
    ({"duration": "ten"}, "duration"),
    ({"threads": 0}, "threads"),
    ({"repeats": 0}, "repeats"),
    ({"warmup": -1}, "warmup"),
    ({"timeout": 31}, "timeout"),
    ({"timeout": 0}, "timeout"),
    ({"payload_bytes": -1}, "payload_bytes"),
    ({"mode": "cloud"}, "mode"),
    ({"nginx_mode": "fastcgi"}, "nginx_mode"),
    ({"worker_processes": "two"}, "worker_processes"),
    ({"worker_processes": "0"}, "worker_processes"),
    ({"netns_prefix": "bad name"}, "netns_prefix"),
    ({"netns_prefix": "../x"}, "netns_prefix"),
    ({"listen_backlog": 0}, "listen_backlog"),
    ({"mode": "fleet"}, "target_url"),
    ({"mode": "fleet", "target_url": "ftp://host/x"}, "target_url"),
    ({"mode": "fleet", "target_url": "http:///nohost"}, "target_url"),
    ({"mode": "fleet", "target_url": "http://h/", "server_sysctls": {"net.core.somaxconn": 1}}, "server_sysctls"),
    ({"target_url": "http://198.18.100.1/payload"}, "target_url"),
    ({"server_sysctls": {"kernel.pid_max": 100000}}, "kernel.pid_max"),
    ({"server_sysctls": {"net/../kernel/pid_max": 1}}, "net/../kernel/pid_max"),
    ({"server_sysctls": ["net.core.somaxconn"]}, "server_sysctls"),
    ({"keepalive": "yes"}, "keepalive"),
    ({"keepalive": 1}, "keepalive"),
])
def test_validation_errors_name_the_field(params, field):
    with pytest.raises(NetstackError) as e:
        hb.validate(params)
    assert e.value.field == field
    assert str(e.value).startswith(field)


def test_validation_defaults_and_normalisation():
    p = hb.validate({"duration": "3", "worker_processes": 2, "connections": None})
    assert p["duration"] == 3 and p["worker_processes"] == "2" and p["connections"] == 16
    assert p["mode"] == "lab" and p["nginx_mode"] == "static" and p["payload_bytes"] == 1024
    f = hb.validate({"mode": "fleet", "target_url": "http://10.0.0.5:8080/payload"})
    assert f["target_url"] == "http://10.0.0.5:8080/payload"


def test_missing_tool_is_named(monkeypatch):
    monkeypatch.setattr(hb, "which", lambda name: None)
    with pytest.raises(NetstackError) as e:
        hb.require_tool("wrk")
    assert e.value.field == "wrk" and "'wrk'" in str(e.value) and "package" in str(e.value)


def test_wrk_argv():
    argv = hb.wrk_argv("http://198.18.100.1:80/payload", 5, 8, 2, 2, "/x.lua", netns="ns-cli", wrk="/usr/bin/wrk",
                       ip="/usr/sbin/ip")
    assert argv == ["/usr/sbin/ip", "netns", "exec", "ns-cli", "/usr/bin/wrk", "-t", "2", "-c", "8", "-d", "5s",
                    "--timeout", "2s", "-s", "/x.lua", "http://198.18.100.1:80/payload"]
    # keepalive false: nginx closes after each response, so wrk connects per request
    argv = hb.wrk_argv("http://h/", 5, 8, 2, 2, "/x.lua", wrk="wrk", keepalive=False)
    assert argv == ["wrk", "-H", "Connection: close", "-t", "2", "-c", "8", "-d", "5s", "--timeout", "2s",
                    "-s", "/x.lua", "http://h/"]


# ------------------------------------------------------------------ real lab runs

needs_lab = pytest.mark.skipif(os.geteuid() != 0 or not all(which(t) for t in ("nginx", "wrk", "ip")),
                               reason="lab needs root, nginx, wrk and ip")


def _netns_names():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _read(path):
    with open(path) as f:
        return f.read()


def _pgrep(pattern):
    p = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(x) for x in p.stdout.split()]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running; only our own children could be one here
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _assert_gone(lab, pids):
    names = _netns_names()
    assert lab.server_netns not in names and lab.client_netns not in names
    assert not os.path.exists(lab.tmpdir)
    assert _pgrep(lab.tmpdir) == []
    assert [p for p in pids if _alive(p)] == []
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert hb.SERVER_IFNAME not in host_links and hb.CLIENT_IFNAME not in host_links


@pytest.mark.root
@needs_lab
@pytest.mark.parametrize("mode", ["static", "proxy"])
def test_real_lab_run_and_nothing_left_behind(mode):
    host_somaxconn = _read("/proc/sys/net/core/somaxconn")
    with hb.Lab(nginx_mode=mode, connections=4, netns_prefix="nsbunit", worker_processes="1",
                server_sysctls={"net.core.somaxconn": 1024}) as lab:
        assert {lab.server_netns, lab.client_netns} <= _netns_names()
        pids = set(nsutil.netns_pids(lab.ip, lab.server_netns)) | lab.nginx_pids_seen
        assert len(pids) >= 2  # master and a worker
        assert _pgrep(lab.tmpdir)  # the master's command line names the prefix
        result = lab.benchmark(duration=2, connections=4, threads=1, warmup=0, repeats=1, timeout=2)
    lat = result["latency_us"]
    assert result["requests"] > 0 and result["requests_per_sec"] > 0
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert result["errors"]["total"] == 0
    assert result["repeats"] == 1 and len(result["runs"]) == 1 and result["warmup"] is None
    assert result["lab"]["nginx_mode"] == mode
    assert result["lab"]["sysctls"][0]["key"] == "net.core.somaxconn"
    assert result["lab"]["sysctls"][0]["after"] == "1024"
    assert _read("/proc/sys/net/core/somaxconn") == host_somaxconn  # the host's own value
    _assert_gone(lab, pids)


@pytest.mark.root
@needs_lab
def test_failed_start_tears_down(monkeypatch):
    def boom(self):
        raise NetstackError("injected failure", field="nginx")
    monkeypatch.setattr(hb.Lab, "start_server", boom)
    lab = hb.Lab(netns_prefix="nsbunit")
    with pytest.raises(NetstackError) as e, lab:
        pass
    assert e.value.field == "nginx"
    _assert_gone(lab, [])


@pytest.mark.root
@needs_lab
def test_unknown_server_sysctl_is_named_and_torn_down():
    lab = hb.Lab(netns_prefix="nsbunit", server_sysctls={"net.ipv4.no_such_key": 1})
    with pytest.raises(NetstackError) as e, lab:
        pass
    assert e.value.field == "net.ipv4.no_such_key"
    _assert_gone(lab, [])


@pytest.mark.root
@needs_lab
def test_exception_inside_the_lab_tears_down():
    with pytest.raises(RuntimeError), hb.Lab(netns_prefix="nsbunit", worker_processes="1") as lab:
        pids = set(lab.nginx_pids_seen)
        raise RuntimeError("study crashed")
    _assert_gone(lab, pids)


@pytest.mark.root
@needs_lab
def test_reap_stale_removes_labs_of_dead_processes():
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = "nsbreap-%d-1-srv" % dead.pid
    tmp = tempfile.mkdtemp(prefix=hb.TMP_PREFIX + "%d-" % dead.pid)
    live_name = "nsbreap-%d-1-cli" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "add", live_name], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "300"])
    try:
        time.sleep(0.2)
        reaped = hb.reap_stale("nsbreap")
        assert name in reaped and tmp in reaped
        assert name not in _netns_names() and not os.path.exists(tmp)
        assert live_name in _netns_names()  # its owner (this process) is alive
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        for n in (name, live_name):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, check=False)


# ------------------------------------------------------------------ fleet mode (loopback)

needs_wrk = pytest.mark.skipif(not which("wrk"), reason="wrk not installed")


@pytest.fixture
def loopback_server():
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"x" * 128
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield "http://127.0.0.1:%d/payload" % srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


@needs_wrk
def test_fleet_mode_runs_wrk_here_against_the_url(loopback_server):
    r = hb.benchmark({"mode": "fleet", "target_url": loopback_server, "duration": 1, "warmup": 1, "repeats": 2,
                      "connections": 2, "threads": 1})
    assert "lab" not in r and r["target_url"] == loopback_server
    assert r["requests"] > 0 and r["repeats"] == 2 and r["warmup"]["requests"] > 0
    assert r["latency_us"]["p50"] <= r["latency_us"]["p99"] <= r["latency_us"]["p99_9"]
    assert r["errors"]["status"] == 0


@needs_wrk
def test_fleet_mode_unreachable_url_names_target_url():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(NetstackError) as e:
        hb.benchmark({"mode": "fleet", "target_url": "http://127.0.0.1:%d/" % port, "duration": 1, "warmup": 0,
                      "repeats": 1, "connections": 1})
    assert e.value.field == "target_url" and "wrk failed" in str(e.value)


class _FailingLab(nsutil.NetnsLab):
    def setup(self):
        assert all(os.path.exists(nsutil._netns_file(n)) for n in self.made)
        raise RuntimeError("setup failed on purpose")


@pytest.mark.root
def test_netns_lab_removes_its_namespaces_when_setup_fails_and_on_exit():
    lab = _FailingLab("nsutest")
    made = list(lab.names.values())
    with pytest.raises(RuntimeError, match="on purpose"):
        with lab:
            pass
    assert not any(os.path.exists(nsutil._netns_file(n)) for n in made)
    with nsutil.NetnsLab("nsutest", ("srv", "cli", "path")) as ok:
        names = list(ok.names.values())
        assert len(ok.made) == 3 and all(os.path.exists(nsutil._netns_file(n)) for n in names)
    assert not any(os.path.exists(nsutil._netns_file(n)) for n in names) and ok.made == []
