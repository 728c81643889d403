# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flow-export encoders, evaluation tooling (not shipped to hosts): NetFlow v5, v9 and
IPFIX export packets, and classic pcap files carrying them as UDP datagrams, built from
simple flow dicts, for tests and the evaluation generator.  The reader is
plugins/module_utils/traffic/ingest.py.

    {"src": "198.51.100.7", "dst": "10.0.0.1", "sport": 443, "dport": 50000, "proto": 6,
     "bytes": 1500, "packets": 1, "tos": 0, "end": 1700000000}

optional keys: start (default end), input / output (ifindex, default 1 / 0), direction
(0 ingress, 1 egress; v9 and IPFIX only), app (IPFIX variable-length field text).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import struct

from ansible_collections.netstack.tuning.plugins.module_utils.traffic.ingest import (
    _IPFIX_HEADER, _U16, _U16X2, _U32, _V5_HEADER, _V5_RECORD, _V9_HEADER, VARLEN)


def _flow(f, unix_secs):
    g = {"sport": 0, "dport": 0, "proto": 6, "packets": 1, "tos": 0, "end": unix_secs, "input": 1, "output": 0}
    g.update(f)
    g.setdefault("start", g["end"])
    g["src_ip"] = ipaddress.ip_address(g["src"])
    g["dst_ip"] = ipaddress.ip_address(g["dst"])
    if g["src_ip"].version != g["dst_ip"].version:
        raise ValueError("a flow's addresses must be of one family: %s -> %s" % (g["src"], g["dst"]))
    return g


def encode_v5(flows, unix_secs, sys_uptime=86400000, sequence=0):
    """One NetFlow v5 export packet (IPv4 flows only); flow "end"/"start" are UNIX seconds."""
    out = [_V5_HEADER.pack(5, len(flows), sys_uptime, unix_secs, 0, sequence, 0, 0, 0)]
    for f in flows:
        g = _flow(f, unix_secs)
        if g["src_ip"].version != 4 or g["dst_ip"].version != 4:
            raise ValueError("NetFlow v5 carries IPv4 flows only: %s -> %s" % (g["src"], g["dst"]))
        last = _uptime_of(sys_uptime, unix_secs, g["end"])
        first = _uptime_of(sys_uptime, unix_secs, g["start"])
        out.append(_V5_RECORD.pack(int(g["src_ip"]), int(g["dst_ip"]), 0, g["input"], g["output"], g["packets"], g["bytes"],
                                   first, last, g["sport"], g["dport"], 0, 0, g["proto"], g["tos"], 0, 0, 0, 0, 0))
    return b"".join(out)


def _uptime_of(sys_uptime, unix_secs, when):
    """The sysUptime (ms, 32-bit) of UNIX time ``when``, given the header's uptime and time."""
    return int(round(sys_uptime - (unix_secs - when) * 1000)) & 0xFFFFFFFF


def _pad4(b):
    return b + b"\x00" * (-len(b) % 4)


def _int_bytes(value, length):
    return int(value).to_bytes(length, "big")


def encode_v9(flows, unix_secs, sys_uptime=86400000, source_id=0, sequence=0, template=True, data=True,
              counter_length=4, template_id=256, options=False):
    """One NetFlow v9 export packet: the template flowset (templates template_id for IPv4 and
    template_id + 1 for IPv6 flows) if ``template``, the data flowsets if ``data``, and an
    options template + options data flowset if ``options``."""
    def fields(v):
        a = 4 if v == 4 else 16
        return [(1, counter_length), (2, counter_length), (4, 1), (5, 1), (7, 2), (11, 2), (8 if v == 4 else 27, a),
                (12 if v == 4 else 28, a), (10, 2), (14, 2), (21, 4), (22, 4), (61, 1)]
    flowsets, count = [], 0
    if template:
        body = b""
        for v, tid in ((4, template_id), (6, template_id + 1)):
            fl = fields(v)
            body += _U16X2.pack(tid, len(fl)) + b"".join(_U16X2.pack(t, n) for t, n in fl)
            count += 1
        flowsets.append(_U16X2.pack(0, 4 + len(body)) + body)
    if options:
        body = struct.pack("!HHH", template_id + 2, 4, 4) + _U16X2.pack(1, 4) + _U16X2.pack(34, 4)
        flowsets.append(_pad4(_U16X2.pack(1, 4 + len(body) + (-(4 + len(body)) % 4)) + body))
        body = struct.pack("!II", source_id, 100)
        flowsets.append(_U16X2.pack(template_id + 2, 4 + len(body)) + body)
        count += 2
    if data:
        for v, tid in ((4, template_id), (6, template_id + 1)):
            recs = []
            for f in flows:
                g = _flow(f, unix_secs)
                if g["src_ip"].version != v:
                    continue
                last = _uptime_of(sys_uptime, unix_secs, g["end"])
                first = _uptime_of(sys_uptime, unix_secs, g["start"])
                recs.append(_int_bytes(g["bytes"], counter_length) + _int_bytes(g["packets"], counter_length) +
                            struct.pack("!BBHH", g["proto"], g["tos"], g["sport"], g["dport"]) +
                            g["src_ip"].packed + g["dst_ip"].packed +
                            struct.pack("!HHIIB", g["input"], g["output"], last, first, g.get("direction", 0)))
            if recs:
                body = b"".join(recs)
                flowsets.append(_pad4(_U16X2.pack(tid, 4 + len(body) + (-(4 + len(body)) % 4)) + body))
                count += len(recs)
    return _V9_HEADER.pack(9, count, sys_uptime, unix_secs, sequence, source_id) + b"".join(flowsets)


def encode_ipfix(flows, export_time, observation_domain=0, sequence=0, template=True, data=True, counter_length=8,
                 time_ie=151, template_id=256, enterprise=False, varlen=False, options=False):
    """One IPFIX message: template set (template_id for IPv4, template_id + 1 for IPv6), data
    sets.  ``time_ie``: 151 flowEndSeconds, 153 flowEndMilliseconds, 150 flowStartSeconds or
    None (no time field: records get the export time).  ``enterprise`` adds an enterprise-
    specific 4-byte field, ``varlen`` a variable-length applicationName (the flow's "app"),
    ``options`` an options template set and one options data record."""
    def fields(v):
        a = 4 if v == 4 else 16
        fl = [(1, counter_length), (2, counter_length), (4, 1), (5, 1), (7, 2), (11, 2), (8 if v == 4 else 27, a),
              (12 if v == 4 else 28, a), (10, 4), (14, 4), (61, 1)]
        if time_ie is not None:
            fl.append((time_ie, 8 if time_ie in (152, 153) else 4))
        if enterprise:
            fl.append((0x8001, 4))
        if varlen:
            fl.append((96, VARLEN))
        return fl
    sets = []
    if template:
        body = b""
        for v, tid in ((4, template_id), (6, template_id + 1)):
            fl = fields(v)
            body += _U16X2.pack(tid, len(fl))
            for ie, n in fl:
                body += _U16X2.pack(ie, n) + (_U32.pack(29305) if ie & 0x8000 else b"")
        sets.append(_U16X2.pack(2, 4 + len(body)) + body)
    if options:
        body = struct.pack("!HHH", template_id + 2, 2, 1) + _U16X2.pack(149, 4) + _U16X2.pack(160, 8)
        sets.append(_U16X2.pack(3, 4 + len(body)) + body)
        body = struct.pack("!IQ", observation_domain, export_time * 1000)
        sets.append(_U16X2.pack(template_id + 2, 4 + len(body)) + body)
    if data:
        for v, tid in ((4, template_id), (6, template_id + 1)):
            recs = []
            for f in flows:
                g = _flow(f, export_time)
                if g["src_ip"].version != v:
                    continue
                r = (_int_bytes(g["bytes"], counter_length) + _int_bytes(g["packets"], counter_length) +
                     struct.pack("!BBHH", g["proto"], g["tos"], g["sport"], g["dport"]) + g["src_ip"].packed +
                     g["dst_ip"].packed + struct.pack("!IIB", g["input"], g["output"], g.get("direction", 0)))
                if time_ie in (151, 150):
                    r += _U32.pack(int(g["end"] if time_ie == 151 else g["start"]))
                elif time_ie in (153, 152):
                    r += struct.pack("!Q", int(round((g["end"] if time_ie == 153 else g["start"]) * 1000)))
                if enterprise:
                    r += _U32.pack(0xDEADBEEF)
                if varlen:
                    app = g.get("app", "app").encode("utf-8")
                    r += (struct.pack("!B", len(app)) if len(app) < 255 else struct.pack("!BH", 255, len(app))) + app
                recs.append(r)
            if recs:
                body = b"".join(recs)
                sets.append(_U16X2.pack(tid, 4 + len(body)) + body)
    body = b"".join(sets)
    return _IPFIX_HEADER.pack(10, 16 + len(body), export_time, sequence, observation_domain) + body


def _checksum(b):
    if len(b) % 2:
        b += b"\x00"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pcap_bytes(datagrams, src_ip="192.0.2.10", dst_ip="192.0.2.1", dport=2055, sport=50000, linktype=1,
               big_endian=False, ts=1700000000):
    """A classic pcap file (bytes) with one UDP datagram per payload in ``datagrams``."""
    order = ">" if big_endian else "<"
    src, dst = ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip)
    out = [struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for i, payload in enumerate(datagrams):
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        if src.version == 4:
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0x4000, 64, 17, 0, src.packed, dst.packed)
            ip = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:] + udp
            etype = 0x0800
        else:
            ip = struct.pack("!IHBB16s16s", 0x60000000, len(udp), 17, 64, src.packed, dst.packed) + udp
            etype = 0x86DD
        if linktype == 1:
            frame = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02" + _U16.pack(etype) + ip
        elif linktype == 113:
            frame = struct.pack("!HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x02\x00\x00", etype) + ip
        elif linktype in (101, 228, 229):
            frame = ip
        else:
            raise ValueError("pcap_bytes writes link types 1, 101 and 113, not %r" % linktype)
        out.append(struct.pack(order + "IIII", ts + i, 0, len(frame), len(frame)) + frame)
    return b"".join(out)


def write_pcap(path, datagrams, src_ip="192.0.2.10", dst_ip="192.0.2.1", dport=2055, **kw):
    """Write ``pcap_bytes(datagrams, ...)`` to ``path``."""
    with open(path, "wb") as f:
        f.write(pcap_bytes(datagrams, src_ip=src_ip, dst_ip=dst_ip, dport=dport, **kw))
