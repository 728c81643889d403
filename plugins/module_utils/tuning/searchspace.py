# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Search spaces for sysctl studies: schema, validation, and mapping trials to sysctls.

A space is YAML (see ``spaces/nginx_latency.yml`` at the collection root)::

    name: nginx-latency
    parameters:
      - name: net.core.somaxconn          # unique parameter name
        type: int                         # int | float | categorical
        low: 128
        high: 65535
        log: true
        reason: accept queue depth under bursts of new connections
      - name: tcp_rmem_default
        sysctl: net.ipv4.tcp_rmem         # defaults to name
        index: 1                          # one element of a vector sysctl
        type: int
        low: 16384
        high: 1048576
        step: 4096
        reason: initial receive buffer

``SCHEMA`` is the JSON Schema (draft 2020-12) shipped with the collection; ``validate``
applies it plus the checks a schema cannot express, and
every error names the parameter and field.  ``to_sysctls`` turns a trial's values into a
{sysctl: value} dict, merging vector elements over the host's current vector.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, schema_error, schema_field
from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://netstack.tuning/schemas/search_space.json",
    "title": "netstack.tuning sysctl search space",
    "type": "object",
    "required": ["name", "parameters"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "parameters": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "type", "reason"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "sysctl": {"type": "string", "minLength": 1},
                    "index": {"type": "integer", "minimum": 0},
                    "type": {"enum": ["int", "float", "categorical"]},
                    "low": {"type": "number"},
                    "high": {"type": "number"},
                    "step": {"type": "number", "exclusiveMinimum": 0},
                    "log": {"type": "boolean"},
                    "choices": {"type": "array", "minItems": 1,
                                "items": {"type": ["string", "integer"]}},
                    "reason": {"type": "string", "minLength": 1},
                },
                "allOf": [
                    {"if": {"properties": {"type": {"const": "categorical"}}},
                     "then": {"required": ["choices"], "not": {"anyOf": [
                         {"required": ["low"]}, {"required": ["high"]}, {"required": ["log"]},
                         {"required": ["step"]}]}},
                     "else": {"required": ["low", "high"], "not": {"required": ["choices"]}}},
                ],
            },
        },
    },
}


def validate(space):
    """Validate a loaded space; return it normalised (sysctl filled in).  Raises
    NetstackError whose field names the parameter and its field."""
    e = schema_error(SCHEMA, space)
    if e:
        field = schema_field(e) or "space"
        if e.absolute_path and len(e.absolute_path) >= 2 and e.absolute_path[0] == "parameters":
            try:
                pname = space["parameters"][e.absolute_path[1]].get("name")
                field = "%s (%s)" % (field, pname) if pname else field
            except (AttributeError, IndexError, KeyError, TypeError):
                pass
        raise NetstackError("search space: %s" % e.message, field=field)

    seen = set()
    out = []
    for i, p in enumerate(space["parameters"]):
        where = "parameters[%d] (%s)" % (i, p.get("name"))
        p = dict(p)
        if p["name"] in seen:
            raise NetstackError("duplicate parameter name", field=where + ".name")
        seen.add(p["name"])
        p.setdefault("sysctl", p["name"])
        try:
            p["sysctl"] = kstate.canonical_sysctl(p["sysctl"])
        except NetstackError as e:
            raise NetstackError(e.msg, field=where + ".sysctl")
        if p["type"] != "categorical":
            if not p["low"] < p["high"]:
                raise NetstackError("low (%s) must be below high (%s)" % (p["low"], p["high"]), field=where + ".low")
            if p.get("log") and p["low"] <= 0:
                raise NetstackError("log scale needs low > 0", field=where + ".log")
            if p.get("log") and p.get("step"):
                raise NetstackError("log scale and step cannot be combined", field=where + ".step")
            if p["type"] == "int":
                for k in ("low", "high", "step"):
                    if k in p and p[k] != int(p[k]):
                        raise NetstackError("must be an integer for an int parameter", field=where + "." + k)
            if p.get("step") and p["step"] > p["high"] - p["low"]:
                raise NetstackError("step is larger than the range", field=where + ".step")
        out.append(p)
    by_target = {}
    for p in out:
        key = (p["sysctl"], p.get("index"))
        if key in by_target:
            raise NetstackError("targets the same sysctl%s as %s" % (
                "" if p.get("index") is None else " element", by_target[key]), field=p["name"])
        by_target[key] = p["name"]
    scalar = {p["sysctl"] for p in out if p.get("index") is None}
    for p in out:
        if p.get("index") is not None and p["sysctl"] in scalar:
            raise NetstackError("sets one element of %s, which another parameter sets whole" % p["sysctl"],
                                field=p["name"])
    space = dict(space)
    space["parameters"] = out
    return space


def load(text_or_obj):
    """Load a space from YAML text or an already-parsed object, then validate it."""
    if isinstance(text_or_obj, str):
        try:
            import yaml
        except ImportError:  # pragma: no cover
            raise NetstackError("PyYAML is needed to read a search space file", field="space")
        try:
            text_or_obj = yaml.safe_load(text_or_obj)
        except yaml.YAMLError as e:
            raise NetstackError("not valid YAML: %s" % e, field="space")
    if not isinstance(text_or_obj, dict):
        raise NetstackError("search space must be a mapping", field="space")
    return validate(text_or_obj)


def suggest(trial, space):
    """Ask an Optuna trial for one value per parameter; returns {param name: value}."""
    values = {}
    for p in space["parameters"]:
        if p["type"] == "categorical":
            values[p["name"]] = trial.suggest_categorical(p["name"], p["choices"])
        elif p["type"] == "int":
            values[p["name"]] = trial.suggest_int(p["name"], int(p["low"]), int(p["high"]),
                                                  step=int(p.get("step") or 1), log=bool(p.get("log")))
        else:
            values[p["name"]] = trial.suggest_float(p["name"], float(p["low"]), float(p["high"]),
                                                    step=p.get("step"), log=bool(p.get("log")))
    return values


def to_sysctls(space, values, current):
    """{param: value} -> {sysctl: normalised value}.

    ``current`` maps sysctl -> current normalised value, used as the base of vector
    sysctls of which only some elements are tuned.  Float values are rounded: the kernel
    takes integers.  A non-finite value (inf, NaN) is a NetstackError naming the parameter.
    """
    out = {}
    for p in space["parameters"]:
        v = values[p["name"]]
        if isinstance(v, float):
            if not math.isfinite(v):
                raise NetstackError("must be a finite number, got %r" % v, field=p["name"])
            v = int(round(v))
        if p.get("index") is None:
            out[p["sysctl"]] = kstate.normalize(v, p["name"])
            continue
        base = out.get(p["sysctl"]) or current[p["sysctl"]]
        vec = base.split(" ")
        if p["index"] >= len(vec):
            raise NetstackError("index %d is beyond the %d elements of %s" % (p["index"], len(vec), p["sysctl"]),
                                field=p["name"])
        vec[p["index"]] = kstate.normalize(v, p["name"])
        out[p["sysctl"]] = " ".join(vec)
    return out


def available(space, missing):
    """(space without the parameters whose sysctl is in ``missing``, the names skipped).
    A space names keys of newer kernels (tcp_rto_min_us is 6.11+); on an older one those
    are left out and listed, not an error, unless nothing is left."""
    missing = set(missing or ())
    keep = [p for p in space["parameters"] if p["sysctl"] not in missing]
    skipped = [p["name"] for p in space["parameters"] if p["sysctl"] in missing]
    if not keep:
        raise NetstackError("this kernel has none of the space's keys (%s)" % ", ".join(skipped), field="space")
    out = dict(space)
    out["parameters"] = keep
    return out, skipped


def defaults_of(space, current):
    """The host's current values of the space's sysctls, as {sysctl: value}."""
    return {s: current[s] for s in {p["sysctl"] for p in space["parameters"]}}
