# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tuning scenarios: named, versioned descriptions of a network path, an nginx and a load.

A scenario (``roles/sysctl_tuner/files/scenarios/*.yml``) says under which condition a
study runs and what kernel weakness that condition exercises::

    name: wan-lossy-keepalive
    version: 1
    description: small objects over kept-alive connections on a lossy WAN path
    weakness: a lost response waits for the tail-loss probe or the RTO, both >= 200 ms ...
    expect_gain: true                    # false for the control, where none is expected
    path: {up: {delay_ms: 10, loss_pct: 0.2}, down: {delay_ms: 10, loss_pct: 2}}
    nginx: {mode: static, payload_bytes: 1024, listen_backlog: 511, worker_processes: 1}
    load: {connections: 32, threads: 1, keepalive: true, duration: 4, warmup: 1, timeout: 10}
    space: wan_latency.yml               # the search space, in ../spaces/

``bench(scenario)`` gives the trial benchmark settings (trial.BENCH_DEFAULTS keys) that
trial.run, sysctl_study and the benchmarks take.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, collection_file, schema_error, schema_field
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import netpath

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://netstack.tuning/schemas/scenario.json",
    "title": "netstack.tuning tuning scenario",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "version", "description", "weakness", "expect_gain", "nginx", "load", "space"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,63}$"},
        "version": {"type": "integer", "minimum": 1},
        "description": {"type": "string", "minLength": 1},
        "weakness": {"type": "string", "minLength": 1},
        "expect_gain": {"type": "boolean"},
        "path": netpath.SCHEMA,
        "nginx": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "mode": {"enum": ["static", "proxy"]},
                "payload_bytes": {"type": "integer", "minimum": 0, "maximum": 256 * 1024 * 1024},
                "listen_backlog": {"type": "integer", "minimum": 1, "maximum": 1 << 20},
                "worker_processes": {"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1, "maximum": 1024}]},
            },
        },
        "load": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "connections": {"type": "integer", "minimum": 1, "maximum": 100000},
                "threads": {"type": "integer", "minimum": 1, "maximum": 256},
                "keepalive": {"type": "boolean"},
                "duration": {"type": "integer", "minimum": 1, "maximum": 3600},
                "warmup": {"type": "integer", "minimum": 0, "maximum": 3600},
                "repeats": {"type": "integer", "minimum": 1, "maximum": 100},
                "timeout": {"type": "integer", "minimum": 1, "maximum": 30},
            },
        },
        "space": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+\\.ya?ml$"},
    },
}

_NGINX_KEYS = {"mode": "nginx_mode", "payload_bytes": "payload_bytes", "listen_backlog": "listen_backlog",
               "worker_processes": "worker_processes"}


def validate(sc, field="scenario"):
    """Check a loaded scenario; NetstackError naming the field (``scenario.path.down.loss_pct``)."""
    err = schema_error(SCHEMA, sc)
    if err:
        raise NetstackError(err.message, field=schema_field(err, field))
    sc = dict(sc)
    sc["path"] = netpath.validate(sc.get("path"), field="%s.path" % field)
    return sc


def load(path_or_text):
    """A scenario from a file path or YAML text, validated."""
    import yaml
    text = path_or_text
    if "\n" not in path_or_text and os.path.isfile(path_or_text):
        with open(path_or_text) as f:
            text = f.read()
    try:
        sc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NetstackError("not valid YAML: %s" % e, field="scenario")
    return validate(sc)


def directory():
    """The scenarios shipped with the collection (roles/sysctl_tuner/files/scenarios)."""
    return collection_file("roles", "sysctl_tuner", "files", "scenarios")


def space_path(sc, scenario_file=None):
    """The scenario's search space: ``space`` beside ../spaces/ of the scenario file."""
    base = os.path.dirname(os.path.abspath(scenario_file)) if scenario_file else directory()
    return os.path.join(os.path.dirname(base), "spaces", sc["space"])


def shipped():
    """{name: file} of the shipped scenarios."""
    out = {}
    d = directory()
    for f in sorted(os.listdir(d)):
        if f.endswith((".yml", ".yaml")):
            out[load(os.path.join(d, f))["name"]] = os.path.join(d, f)
    return out


def bench(sc, **overrides):
    """The trial benchmark settings (trial.BENCH_DEFAULTS keys) of a scenario."""
    out = {"path": sc["path"] if netpath.impaired(sc["path"]) else None}
    for k, v in (sc.get("nginx") or {}).items():
        out[_NGINX_KEYS[k]] = v
    out.update(sc.get("load") or {})
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out
