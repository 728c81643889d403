# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstack-agent's config: ``agent.json`` (the agent's own settings, rendered by the
netstack_agent role) merged with ``agent.d/*.json`` (one file per capability, written by its
module), validated as a whole by JSON Schema.  Each capability's section has its schema and
its own further checks on its controller class (agent/registry.py); only the sections a
config holds are imported.

Every number in the config must be finite: NaN compares false with every bound, so a
schema's minimum/maximum (and Python's jsonschema, which takes NaN as a "number") would let
``interval: NaN`` through, and the agent would reconcile without pause.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import glob
import hashlib
import ipaddress
import json
import os

from ansible_collections.netstack.tuning.plugins.module_utils.agent import registry
from ansible_collections.netstack.tuning.plugins.module_utils.agent.control import CONFD, CONFIG
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, first_non_finite, schema_error, schema_field

DEFAULTS = {
    "interval": 10,
    "state_dir": "/var/lib/netstack",
    "log": "/var/log/netstack/agent.log",
    "metrics": {"listen": "127.0.0.1", "port": 9542, "textfile": None, "allow_remote": False},
}


def schema(sections=None):
    """The whole config's JSON Schema; the capability sections' schemas come from their
    controllers, for ``sections`` (default: every registered one)."""
    names = registry.names() if sections is None else [s for s in registry.names() if s in sections]
    props = {
        "interval": {"type": "number", "minimum": 1, "maximum": 3600},
        "state_dir": {"type": "string", "pattern": "^/"},
        "log": {"type": ["string", "null"], "pattern": "^/"},
        "metrics": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "listen": {"type": "string", "minLength": 1},
                "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                "textfile": {"type": ["string", "null"], "pattern": "^/"},
                # the endpoint has no authentication: a non-loopback listen address
                # needs this opt-in (checked in validate())
                "allow_remote": {"type": "boolean"},
            },
        },
    }
    for name in names:
        props[name] = registry.controller(name).schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "additionalProperties": False, "properties": props}


# ------------------------------------------------------------------ config

def is_loopback(host):
    """True for ``localhost`` and loopback address literals (127.0.0.0/8, ::1, and
    127.x written as IPv4-mapped IPv6)."""
    if host in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _check_metrics_listen(metrics, origin):
    listen = metrics["listen"]
    if is_loopback(listen) or metrics.get("allow_remote") is True:
        return
    raise NetstackError("%s is not a loopback address: the metrics endpoint has no authentication, so it "
                        "listens beyond this host only with metrics.allow_remote: true (role variable "
                        "netstack_agent_metrics_allow_remote: true); or listen on 127.0.0.1 (in %s)"
                        % (listen, origin), field="metrics.listen")


def validate(cfg, origin="config"):
    """Validate a merged config; returns it with defaults filled in.  NetstackError names
    the field (and the file it came from)."""
    bad = first_non_finite(cfg)
    if bad:  # before the schema: jsonschema takes NaN as a number, and NaN passes every bound
        raise NetstackError("must be a finite number, got %r (in %s)" % (bad[1], origin), field=bad[0])
    unknown = sorted(k for k in cfg if k not in ("interval", "state_dir", "log", "metrics") and not registry.known(k))
    if unknown:
        raise NetstackError("Additional properties are not allowed (%r was unexpected) (in %s)" % (unknown[0], origin),
                            field=unknown[0])
    err = schema_error(schema(sections=cfg), cfg)
    if err:
        raise NetstackError("%s (in %s)" % (err.message, origin), field=schema_field(err) or "config")
    out = copy.deepcopy(DEFAULTS)
    for k, v in cfg.items():
        if k == "metrics":
            out["metrics"].update(v)
        else:
            out[k] = v
    _check_metrics_listen(out["metrics"], origin)
    for name in registry.names():
        if name in out:
            try:
                registry.controller(name).check(out[name], out)
            except NetstackError as e:
                raise NetstackError("%s (in %s)" % (e.msg, origin), field=e.field)
    return out


def _read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise NetstackError("%s is not valid JSON: %s" % (path, e), field="config")
    if not isinstance(data, dict):
        raise NetstackError("%s must hold a JSON object" % path, field="config")
    return data


def load(config=CONFIG, confd=CONFD):
    """Merge ``config`` and ``confd``/*.json (sorted by name; a key of a later file replaces
    the same key of an earlier one) and validate.  Returns (config, sources, digest)."""
    merged, sources = {}, []
    if os.path.exists(config):
        merged.update(_read_json(config))
        sources.append(config)
    for path in sorted(glob.glob(os.path.join(confd, "*.json"))) if confd else []:
        merged.update(_read_json(path))
        sources.append(path)
    cfg = validate(merged, origin=", ".join(sources) or "defaults")
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
    return cfg, sources, digest
