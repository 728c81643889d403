# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Traffic insight (capability 5): what the traffic_profile module and the
``netstack-traffic`` command line (traffic/cli.py) call.

    collect        the BPF collector (trafficcollect) and its store, oneshot or via the agent
    analyze_files  sources (store dirs, CSV flow logs, NetFlow/IPFIX) -> flowfile -> analyzer
                   (trafficanalysis) -> JSON result and HTML report (trafficreport)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import json
import os
import socket
import time

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path
from ansible_collections.netstack.tuning.plugins.module_utils.agent import control as agent_engine

SECTION = "traffic"


def _int(params, key, lo, hi):
    v = params.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise NetstackError("must be an integer from %d to %d, got %r" % (lo, hi, v), field=key)
    return v


def collect_settings(params):
    """The validated collector settings (also the agent's ``traffic`` section).  The
    collector's own checks (trafficcollect.settings) cover name, interfaces, netns, prefix
    lengths and map size; the scrape interval, store and retention are this front end's."""
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import collect as trafficcollect
    state = params.get("state", "present")
    ifaces = params.get("interfaces")
    c = trafficcollect.settings(params.get("name") or "traffic", (ifaces or []) if state == "present" else ifaces,
                                params.get("netns") or None, params.get("prefix_v4"), params.get("prefix_v6"),
                                params.get("max_flows"))
    state_dir = params.get("state_dir") or "/var/lib/netstack"
    out = dict((k, c[k]) for k in ("name", "interfaces", "netns", "prefix_v4", "prefix_v6", "max_flows"))
    out.update(state=state, interval=_int(params, "interval", 1, 3600),
               store=params.get("store") or os.path.join(state_dir, "traffic", "store"),
               retention_days=_int(params, "retention_days", 1, 3650),
               link_prefix=params.get("link_prefix") or socket.gethostname())
    return out


def collect(params, check_mode=False):
    """The ``collect`` action of traffic_profile (see its documentation)."""
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import collect as trafficcollect
    s = collect_settings(params)
    mode = params.get("mode") or "oneshot"
    duration = _int(params, "duration", 1, 7 * 86400) if mode == "oneshot" and s["state"] == "present" else 0
    if duration and s["interval"] > duration:
        raise NetstackError("the scrape interval (%d s) is longer than the collection (%d s)" % (s["interval"], duration),
                            field="interval")
    source = params.get("source_text")
    if s["state"] == "present" and not source:
        raise NetstackError("the BPF source was not passed (run the module through its action plugin, or set "
                            "source_text)", field="source_text")
    coll = trafficcollect.Collector(name=s["name"], interfaces=s["interfaces"] or None, netns=s["netns"],
                                    prefix_v4=s["prefix_v4"], prefix_v6=s["prefix_v6"], max_flows=s["max_flows"],
                                    state_dir=params.get("state_dir") or "/var/lib/netstack", link_prefix=s["link_prefix"],
                                    source_text=source)
    store = trafficcollect.Store(s["store"], retention_days=s["retention_days"])
    result = {"changed": False, "notes": [], "scrapes": {"scrapes": 0, "rows": 0}}
    cfg_changed = False
    if mode == "oneshot" and s["state"] == "present":
        held = _agent_section(params.get("config_dir") or agent_engine.CONFD)
        if held.get("state") == "present" and held.get("name", "traffic") == s["name"]:
            raise NetstackError("netstack-agent keeps a collector named %s here; a oneshot run would remove it at its end "
                                "(use mode agent, or another name)" % s["name"], field="mode")
    if mode == "agent" or s["state"] == "absent":
        section = dict(s) if s["state"] == "present" else {"state": "absent", "name": s["name"]}
        cfg_dir = params.get("config_dir") or agent_engine.CONFD
        if mode == "agent" or os.path.exists(os.path.join(cfg_dir, SECTION + ".json")):
            cfg_changed = agent_engine.write_section(cfg_dir, SECTION, section, check_mode=check_mode)
            pid = agent_engine.running()
            told = bool(cfg_changed and pid and params.get("notify_agent", True) and not check_mode)
            if told:
                agent_engine.notify()
            result["agent"] = {"pid": pid, "reloaded": told}
            result["config_file"] = os.path.join(cfg_dir, SECTION + ".json")
            if mode == "agent" and s["state"] == "present" and not pid:
                result["notes"].append("netstack-agent is not running here: the program is attached, but nothing scrapes "
                                       "it until the agent runs (role netstack.tuning.netstack_agent)")
    if s["state"] == "absent":
        res = coll.absent(check_mode=check_mode)
        result.update(changed=bool(res["changed"] or cfg_changed), collector=res)
        result["store"] = store.summary()
        _diff(result, res)
        return result
    res = coll.present(check_mode=check_mode)
    result["collector"] = res
    _diff(result, res)
    if check_mode:
        result["changed"] = bool(res["changed"] or cfg_changed or mode == "oneshot")
        result["store"] = store.summary()
        return result
    if mode == "agent":
        # The agent scrapes (one scraper per map: two would each take the other's deltas).
        result["changed"] = bool(res["changed"] or cfg_changed)
        result["store"] = store.summary()
        return result
    try:
        result["scrapes"] = trafficcollect.scrape_loop(coll, store, s["interval"], duration=duration)
    finally:
        if not params.get("keep"):
            gone = coll.absent()
            result["collector"]["removed_after_run"] = bool(gone["changed"])
    result["changed"] = True  # rows were written to the store
    result["store"] = store.summary()
    return result


def _agent_section(cfg_dir):
    try:
        with open(os.path.join(cfg_dir, SECTION + ".json")) as f:
            sec = json.load(f)
    except (IOError, OSError, ValueError):
        return {}
    sec = sec.get(SECTION) if isinstance(sec, dict) else None   # the file is {"traffic": {...}}
    return sec if isinstance(sec, dict) else {}


def _diff(result, res):
    hdr = "traffic collector"
    d = res.get("diff") or {}
    result["diff"] = {"before_header": hdr, "after_header": hdr,
                      "before": json.dumps(d.get("before"), indent=2, sort_keys=True) + "\n",
                      "after": json.dumps(d.get("after"), indent=2, sort_keys=True) + "\n"}


# ------------------------------------------------------------------ analysis

def expand_sources(sources):
    """Files named by ``sources`` (files, directories -> their *.csv, glob patterns)."""
    if not sources:
        raise NetstackError("at least one file, directory or pattern is required", field="sources")
    files = []
    for i, src in enumerate(sources):
        if os.path.isdir(src):
            found = sorted(glob.glob(os.path.join(src, "*.csv")))   # an empty store is fine
        elif os.path.isfile(src):
            found = [src]
        else:
            found = sorted(f for f in glob.glob(src) if os.path.isfile(f))
            if not found:
                raise NetstackError("%s: no such file or directory, and no file matches it" % src, field="sources[%d]" % i)
        files += [f for f in found if f not in files]
    return files


NAME_MAX = 255
NO_WRITE_ROOTS = ("/proc", "/sys", "/dev")


def check_output(path, field):
    """Where ``field`` (output, report) would be written: the real path of ``path``, a file
    (or none yet) in an existing, writable directory outside /proc, /sys and /dev.  Called
    before any work, in check mode too; NetstackError naming ``field`` otherwise."""
    check_path(path, field, absolute=False)
    real = os.path.realpath(path)
    for root in NO_WRITE_ROOTS:
        if real == root or real.startswith(root + "/"):
            raise NetstackError("%s is under %s, not a place to write a file" % (real[:200], root), field=field)
    if os.path.isdir(real):
        raise NetstackError("%s is a directory; name a file in it" % real[:200], field=field)
    if os.path.lexists(real) and not os.path.isfile(real):
        raise NetstackError("%s exists and is not a regular file" % real[:200], field=field)
    parent, base = os.path.split(real)
    if not os.path.isdir(parent):
        raise NetstackError("directory %s does not exist" % parent[:200], field=field)
    if len(base.encode("utf-8", "surrogateescape")) + len(".tmp") > NAME_MAX:
        raise NetstackError("file name longer than %d bytes" % (NAME_MAX - len(".tmp")), field=field)
    if not os.access(parent, os.W_OK):
        raise NetstackError("directory %s is not writable" % parent[:200], field=field)
    return real


def _same_text(path, data):
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as f:
            return f.read() == data
    except (IOError, OSError):
        return False


def _write(path, text, check_mode, field="output"):
    """Write ``text`` to ``path`` (checked by check_output) when it differs, through a
    temporary file renamed over it; True when it did (or would)."""
    data = text.encode("utf-8")
    if _same_text(path, data):
        return False
    if check_mode:
        return True
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except (IOError, OSError) as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise NetstackError("cannot write %s: %s" % (path[:200], e.strerror or e), field=field)
    return True


def summary(result):
    """The module's return value: the result without plot data and day-by-day lists."""
    out = dict((k, v) for k, v in result.items() if k not in ("plots", "series", "projection", "options"))
    out["series"] = [dict((k, v) for k, v in s.items() if k != "profile") for s in result["series"]]
    out["projection"] = [dict((k, v) for k, v in p.items() if k not in ("daily", "history")) for p in result["projection"]]
    out["span"] = {"start": result["start"], "end": result["end"], "step": result["step"]}
    return out


def _given(params, key, default):
    value = params.get(key)
    return default if value is None else value     # 0 is a prefix length (/0), not "unset"


TIMINGS = ("analysis_seconds", "records_per_second", "end_to_end_seconds", "end_to_end_records_per_second")


def analyze_files(params, check_mode=False):
    """The ``analyze`` action of traffic_profile.  Every option (the analysis settings, the
    output and report paths) is checked before any file is read, in check mode too."""
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import ingest as flowfile, analysis as trafficanalysis, report as trafficreport
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import data as trafficdata
    opts = trafficanalysis.options(params.get("analysis") or {}, prefix="analysis.")
    targets = {}
    for field in ("output", "report"):
        if params.get(field):
            targets[field] = check_output(params[field], field)
    if len(targets) == 2 and targets["output"] == targets["report"]:
        raise NetstackError("output and report name the same file (%s)" % targets["report"][:200], field="report")
    files = expand_sources(params.get("sources"))
    started = time.time()
    with trafficdata.large_arrays():
        rec = flowfile.read_many(files, fmt=params.get("format") or "auto", local_prefixes=params.get("local_prefixes") or (),
                                 prefix_v4=_given(params, "prefix_v4", 24), prefix_v6=_given(params, "prefix_v6", 48)) if files else None
        if rec is None or not len(rec):
            # Nothing counted (idle interfaces, a fresh store): an honest empty report, not a failure.
            result = {"records": 0, "bytes": 0, "links": [], "series": [], "anomalies": [], "billing": [], "projection": [],
                      "water_levels": [], "top_talkers": {}, "plots": [], "start": None, "end": None,
                      "step": opts["step"], "notes": ["no traffic records in %d source file(s)" % len(files)]}
        else:
            result = trafficanalysis.analyze(rec, params.get("analysis") or {})
    # End to end: reading the files included (the analysis' own records/s leaves it out).
    total = time.time() - started
    result["end_to_end_seconds"] = round(total, 3)
    result["end_to_end_records_per_second"] = round(result["records"] / total) if total > 0 and result["records"] else None
    result["sources"] = files
    changed = False
    written = {}
    if "output" in targets:
        stable = dict((k, v) for k, v in result.items() if k not in TIMINGS)
        changed |= _write(targets["output"], json.dumps(stable, indent=1, sort_keys=True) + "\n",
                          check_mode, "output")
        written["output"] = params["output"]
    if "report" in targets:
        page = trafficreport.html(result, title=params.get("title") or "netstack.tuning traffic insight",
                                  hosts=params.get("hosts"))
        changed |= _write(targets["report"], page, check_mode, "report")
        written["report"] = params["report"]
    out = summary(result)
    out.update(changed=changed, files=written)
    return out


# ------------------------------------------------------------------ command line

def write_csv(path, rec):
    """Records as a native CSV flow log (the store's format)."""
    from ansible_collections.netstack.tuning.plugins.module_utils.traffic import data as trafficdata
    import numpy as np
    cols = []
    for k in trafficdata.HEADER:
        if k in trafficdata.STRING_COLUMNS:
            cols.append(rec.strings(k).astype(str))
        else:
            cols.append(rec.ints[k].astype(str))
    with open(path, "w") as f:
        f.write(",".join(trafficdata.HEADER) + "\n")
        chunk = 500000
        for s in range(0, len(rec), chunk):
            block = np.stack([c[s:s + chunk] for c in cols], axis=1)
            f.write("\n".join(",".join(r) for r in block.tolist()))
            f.write("\n")
