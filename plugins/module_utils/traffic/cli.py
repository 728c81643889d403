# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstack-traffic, the command line of traffic insight (scripts/netstack-traffic):

    netstack-traffic analyze SOURCE... [--json FILE] [--report FILE] [--step S]
                             [--capacity LINK=BPS]... [--price PER_MBPS] [--holiday YYYY-MM-DD]...
                             [--timezone ZONE] [--link-timezone LINK=ZONE]... [--link-holiday LINK=YYYY-MM-DD]...
                             [--local PREFIX]... [--horizon DAYS]
    netstack-traffic generate DIR [--seed N] [--sites N] [--days N] [--records N]

analyze reads store directories, CSV flow logs and NetFlow v5/v9/IPFIX files (raw or pcap)
and prints the summary; generate writes evaluation data (tools/trafficgen.py, a checkout
only).  Errors name the option and exit 2.  Runs on the controller (numpy)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import math
import os
import sys

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as a NetstackError naming the option, instead
    of printing and exiting from inside the engine."""

    def error(self, message):
        raise _Refused(message)


def _number(text, field):
    try:
        value = float(text)
    except ValueError:
        raise NetstackError("%r is not a number" % text[:40], field=field)
    if not math.isfinite(value):
        raise NetstackError("%r is not a finite number" % text[:40], field=field)
    return value


def parser():
    p = _Parser(prog="netstack-traffic", description="Traffic insight: analyse flow data, or generate evaluation data.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    a = sub.add_parser("analyze", help="summary (anomalies, 95th percentile, projection); JSON and HTML on request")
    a.add_argument("sources", nargs="+", metavar="SOURCE", help="store directory, CSV flow log, NetFlow/IPFIX (raw or pcap)")
    a.add_argument("--json", help="write the full result as JSON")
    a.add_argument("--report", help="write the HTML report")
    a.add_argument("--step", help="bin width, seconds")
    a.add_argument("--capacity", action="append", default=[], metavar="LINK=BPS", help="a link's capacity, bits/s")
    a.add_argument("--price", help="price per Mbit/s of the 95th percentile")
    a.add_argument("--holiday", action="append", default=[], metavar="YYYY-MM-DD", help="a day like a Sunday, every link")
    a.add_argument("--timezone", help="IANA zone the day shape is built in (default UTC)")
    a.add_argument("--link-timezone", action="append", default=[], metavar="LINK=ZONE", help="a link's own zone")
    a.add_argument("--link-holiday", action="append", default=[], metavar="LINK=YYYY-MM-DD", help="a holiday of one link")
    a.add_argument("--local", action="append", default=[], metavar="PREFIX", help="this site's prefixes")
    a.add_argument("--horizon", help="projection horizon, days")
    g = sub.add_parser("generate", help="evaluation data with labelled anomalies: DIR/traffic.csv and DIR/labels.json")
    g.add_argument("dir", metavar="DIR")
    for k in ("seed", "sites", "days", "records"):
        g.add_argument("--" + k)
    return p


def _analysis(o):
    analysis = {"holidays": o.holiday, "capacity": {}, "timezones": {}, "link_holidays": {}}
    for opt, values in (("--link-timezone", o.link_timezone), ("--link-holiday", o.link_holiday)):
        for c in values:
            link, _sep, value = c.rpartition("=")
            if not link or not value:
                raise NetstackError("want LINK=%s, got %r" % ("ZONE" if opt == "--link-timezone" else "YYYY-MM-DD", c[:80]),
                                    field=opt)
            if opt == "--link-timezone":
                analysis["timezones"][link] = value
            else:
                analysis["link_holidays"].setdefault(link, []).append(value)
    if o.timezone is not None:
        analysis["timezone"] = o.timezone
    for c in o.capacity:
        link, _sep, bps = c.rpartition("=")
        if not link:
            raise NetstackError("want LINK=BITS_PER_SECOND, got %r" % c, field="--capacity")
        analysis["capacity"][link] = _number(bps, "--capacity")
    if o.step is not None:
        analysis["step"] = int(_number(o.step, "--step"))
    if o.horizon is not None:
        analysis["horizon_days"] = int(_number(o.horizon, "--horizon"))
    if o.price is not None:
        analysis["price_per_mbps"] = _number(o.price, "--price")
    return analysis


def analyze(o, out):
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import profile
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import report as trafficreport
    res = profile.analyze_files({"sources": o.sources, "local_prefixes": o.local, "analysis": _analysis(o),
                                 "output": o.json, "report": o.report})
    out.write(trafficreport.markdown(res))
    out.write("\n%d records in %.2f s end to end, reading included: %.0f records/s (analysis alone %.2f s, "
              "%.0f records/s)\n" % (res["records"], res.get("end_to_end_seconds") or 0,
                                     res.get("end_to_end_records_per_second") or 0,
                                     res.get("analysis_seconds") or 0, res.get("records_per_second") or 0))
    return 0


def generate(o, out):
    try:
        from ansible_collections.netstack.tuning.tools import trafficgen
    except ImportError:
        raise NetstackError("the generator is evaluation tooling (tools/trafficgen.py): run it from a checkout",
                            field="generate")
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import profile
    kw = dict((k, int(_number(getattr(o, k), "--" + k))) for k in ("seed", "sites", "days", "records")
              if getattr(o, k) is not None)
    rec, labels, _truth = trafficgen.generate(**kw)
    os.makedirs(o.dir, exist_ok=True)
    profile.write_csv(os.path.join(o.dir, "traffic.csv"), rec)
    with open(os.path.join(o.dir, "labels.json"), "w") as f:
        json.dump(labels, f, indent=1, sort_keys=True)
    out.write("%d records, %d labelled anomalies in %s\n" % (len(rec), len(labels), o.dir))
    return 0


def main(argv=None, out=None):
    argv = sys.argv[1:] if argv is None else argv
    out = out or sys.stdout
    p = parser()
    if not argv or argv[0] in ("-h", "--help", "help"):
        out.write(p.format_help())
        return 0 if argv else 2
    try:
        try:
            o = p.parse_args(argv)
        except _Refused as e:
            raise NetstackError(str(e), field=argv[0] if argv[0] not in ("analyze", "generate") else "arguments")
        if o.command is None:
            raise NetstackError("a command is required (analyze, generate)", field="command")
        return {"analyze": analyze, "generate": generate}[o.command](o, out)
    except NetstackError as e:
        sys.stderr.write("netstack-traffic: %s\n" % e)
        return 2
