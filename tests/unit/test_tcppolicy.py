"""Unit tests of the tcp_policy engine (pure Python: validation, encoding round trips)
and of the bpf engine's input checks.  The kernel-facing parts are covered by the
integration targets bpf_program and tcp_policy (they need bcc and root)."""
import os
import re
import shutil
import struct
import subprocess

import pytest

from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf
from ansible_collections.netstack.tuning.plugins.module_utils.tcp_tuning import policy as tcppolicy
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

CCS = ["reno", "cubic", "bbr"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _c_layout(tmp_path, names):
    """sizeof and field offsets of ``names`` (structs of bpf/tcp_tuning.bpf.c), as the C
    compiler lays them out: the structs are cut from the BPF source and compiled for this
    machine (x86-64 and the BPF target agree on these plain integer layouts)."""
    src = open(os.path.join(ROOT, "bpf", "tcp_tuning.bpf.c")).read()
    defines = "\n".join(re.findall(r"^#define CC_LEN .*$", src, re.M))
    body = []
    for name in names:
        text = re.search(r"^struct %s \{.*?^\};" % name, src, re.M | re.S).group(0)
        fields = re.findall(r"(\w+)(?:\[[^\]]*\])?\s*[,;]", re.sub(r"//.*", "", text.split("{", 1)[1]))
        body.append(text)
        prints = ['printf("%s size %%zu\\n", sizeof(struct %s));' % (name, name)]
        prints += ['printf("%s %s %%zu\\n", offsetof(struct %s, %s));' % (name, f, name, f) for f in fields]
        body.append("static void show_%s(void) { %s }" % (name, " ".join(prints)))
    c = tmp_path / "layout.c"
    c.write_text("#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n"
                 "typedef uint16_t __u16; typedef uint32_t __u32; typedef uint64_t __u64;\n%s\n%s\n"
                 "int main(void) { %s return 0; }\n" % (defines, "\n".join(body),
                                                         " ".join("show_%s();" % n for n in names)))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-o", str(exe), str(c)], check=True, capture_output=True)
    out = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines():
        struct_name, field, value = line.split()
        out[(struct_name, field)] = int(value)
    return out


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler")
def test_rule_layout_matches_the_c_struct(tmp_path):
    """The Python encoding of a rule and of the config is the C structs' layout, field by
    field (not a size written down by hand)."""
    c = _c_layout(tmp_path, ["rule", "config"])
    assert tcppolicy.RULE_SIZE == c[("rule", "size")]
    assert struct.calcsize(tcppolicy.CFG_FMT) == c[("config", "size")]
    # RULE_FMT's fields in order: flags, addr, mask, 4 ports, 10 u32, cc
    fields = ["flags", "addr", "mask", "rport_lo", "rport_hi", "lport_lo", "lport_hi", "min_active", "min_long",
              "init_cwnd", "rto_min_us", "delack_max_us", "sndbuf", "rcvbuf", "cwnd_clamp", "notsent_lowat",
              "syn_rto_jiffies", "cc"]
    assert [c[("rule", f)] for f in fields] == _offsets(tcppolicy.RULE_FMT)
    # CFG_FMT "<IIIIQ": active_set, nrules[0], nrules[1], flags, long_bytes
    py = _offsets(tcppolicy.CFG_FMT)
    assert [c[("config", f)] for f in ("active_set", "nrules", "flags", "long_bytes")] == [py[0], py[1], py[3], py[4]]


def _offsets(fmt):
    """Start offsets of the fields of a little-endian struct format ("16s" is one field)."""
    out, pos = [], 0
    for count, code in re.findall(r"(\d*)([A-Za-z])", fmt.lstrip("<")):
        n = int(count or 1)
        for _i in range(1 if code == "s" else n):
            out.append(pos)
            pos += n if code == "s" else struct.calcsize("<" + code)
    return out


def test_encode_decode_round_trip_ipv4():
    rules = [{"name": "dc", "match": {"remote": "198.18.0.0/15", "remote_ports": "80-443", "local_ports": 8080,
                                      "peer_long_flows_gt": 2},
              "set": {"congestion_control": "cubic", "initial_cwnd": 32, "rto_min_ms": 20, "delack_max_ms": 5,
                      "sndbuf": 262144, "rcvbuf": 262144, "cwnd_clamp": 64, "notsent_lowat": 131072,
                      "syn_rto_ms": 300}}]
    norm, enc, flags = tcppolicy.plan(rules, 1 << 20, None, 250, CCS)
    assert flags == tcppolicy.C_TRACK
    d = tcppolicy.decode_rule(enc[0], 250)
    assert d["match"] == {"remote": "198.18.0.0/15", "remote_ports": "80-443", "local_ports": "8080-8080",
                          "peer_long_flows_gt": 2}
    assert d["set"] == rules[0]["set"]
    flags_r, addr, mask = struct.unpack_from("<I16s16s", enc[0])
    assert addr == b"\0" * 10 + b"\xff\xff" + bytes([198, 18, 0, 0])
    assert mask == b"\xff" * 12 + b"\xff\xfe\0\0"


def test_any_and_ipv6():
    norm, enc, flags = tcppolicy.plan([{"name": "a", "set": {"initial_cwnd": 10}},
                                       {"name": "b", "match": {"remote": "2001:db8::/32"}, "set": {"cwnd_clamp": 5}}],
                                      1, False, 250, CCS)
    assert flags == 0
    assert tcppolicy.decode_rule(enc[0], 250)["match"]["remote"] == "any"
    assert tcppolicy.decode_rule(enc[1], 250)["match"]["remote"] == "2001:db8::/32"


def test_syn_rto_uses_hz():
    _n, enc, _f = tcppolicy.plan([{"name": "s", "set": {"syn_rto_ms": 300}}], 1, None, 1000, CCS)
    assert struct.unpack_from("<I", enc[0], 80)[0] == 300
    _n, enc, _f = tcppolicy.plan([{"name": "s", "set": {"syn_rto_ms": 300}}], 1, None, 250, CCS)
    assert struct.unpack_from("<I", enc[0], 80)[0] == 75


@pytest.mark.parametrize("rules,field", [
    ([{"name": "x", "set": {"congestion_control": "nosuch"}}], "congestion_control"),
    ([{"name": "x", "set": {"rto_min_ms": 500}}], "rules[0] (x).set.rto_min_ms"),
    ([{"name": "x", "set": {}}], "rules[0] (x).set"),
    ([{"name": "x", "set": {"bogus": 1}}], "rules[0] (x).set"),
    ([{"name": "x", "match": {"remote": "300.1.1.1/8"}, "set": {"initial_cwnd": 1}}], "match.remote"),
    ([{"name": "x", "match": {"remote_ports": "90-80"}, "set": {"initial_cwnd": 1}}], "remote_ports"),
    ([{"name": "x", "set": {"initial_cwnd": 1}}, {"name": "x", "set": {"initial_cwnd": 2}}], "name"),
    ([{"set": {"initial_cwnd": 1}}], "rules[0]"),
])
def test_bad_rules_name_the_field(rules, field):
    with pytest.raises(NetstackError) as e:
        tcppolicy.validate(rules, CCS)
    assert field in str(e.value)


def test_too_many_rules():
    with pytest.raises(NetstackError):
        tcppolicy.validate([{"name": "r%d" % i, "set": {"initial_cwnd": 1}} for i in range(33)], CCS)


def test_bpf_names_and_programs():
    with pytest.raises(NetstackError) as e:
        bpf.Engine("/nonexistent").present("has.dot", "x", [{"function": "f", "type": "sock_ops", "cgroup": "/"}])
    assert e.value.field == "name"
    with pytest.raises(NetstackError) as e:
        bpf.normalize_programs([{"function": "f", "type": "xdp"}])
    assert e.value.field == "programs[0].type"
    with pytest.raises(NetstackError) as e:
        bpf.normalize_programs([{"function": "f", "type": "sk_msg"}])
    assert e.value.field == "programs[0].map"
    with pytest.raises(NetstackError) as e:
        bpf.normalize_programs([{"function": "f", "type": "sched_cls", "interface": "bad name!"}])
    assert e.value.field == "programs[0].interface"


def test_digest_changes_with_flags_and_attach():
    p = [{"function": "f", "type": "sk_msg", "map": "m", "attach_type": "sk_msg_verdict"}]
    a = bpf.source_digest("src", [], p)
    assert a == bpf.source_digest("src", [], p)
    assert a != bpf.source_digest("src", ["-DX"], p)
    assert a != bpf.source_digest("src2", [], p)


def test_log_tail_keeps_errors_and_the_end():
    text = "\n".join(["main.c:1: error: boom"] + ["line %d" % i for i in range(200)])
    out = bpf._tail(text, 10)
    assert out[0] == "main.c:1: error: boom"
    assert out[-1] == "line 199"


def test_effective_hz(monkeypatch):
    """kernel_hz as given (0 is plan()'s to refuse), else CONFIG_HZ, else 250 with a note."""
    assert tcppolicy.effective_hz(0) == (0, [])
    monkeypatch.setattr(tcppolicy, "kernel_hz", lambda: 1000)
    assert tcppolicy.effective_hz(None) == (1000, [])
    monkeypatch.setattr(tcppolicy, "kernel_hz", lambda: None)
    hz, notes = tcppolicy.effective_hz(None)
    assert hz == 250 and "assuming 250" in notes[0]
