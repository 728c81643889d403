# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the traffic_insight role."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def traffic_host_note(result):
    """One host's line in the traffic report, from its traffic_profile collect result."""
    result = result or {}
    if result.get("failed") or result.get("unreachable"):
        return {"status": "failed", "msg": str(result.get("msg", "collection failed"))}
    store = result.get("store") or {}
    scrapes = result.get("scrapes") or {}
    return {"status": "ok", "records": store.get("rows"), "first": store.get("first_ts"), "last": store.get("last_ts"),
            "scrapes": scrapes.get("scrapes"), "rows_written": scrapes.get("rows"),
            "msg": "; ".join(result.get("notes") or [])}


class FilterModule(object):
    def filters(self):
        return {"traffic_host_note": traffic_host_note}
