#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: shm_probe
short_description: Measure request/response over the same-host path against plain TCP on this host
version_added: 0.2.0
description:
  - Runs an echo server on two loopback ports, O(path_port) (inside a policy of the
    same-host path, M(netstack.tuning.shm_agent)) and O(tcp_port) (outside every policy),
    and a client that exchanges messages of O(size) bytes with each, one in flight, for
    O(seconds) per port and round; the two alternate and their order flips every round.
  - Returns round trips per second and RTT percentiles for both, their ratio, and what the
    path's counters say happened meanwhile (bytes moved socket to socket, bytes over TCP),
    so a run shows whether the path carries the traffic and what it gains here.
  - With O(cgroup) the client joins that cgroup v2 first, so programs attached to it (for
    example M(netstack.tuning.tcp_policy)'s rules) see its connections.
  - Changes nothing on the host; the processes and sockets it makes are gone when it returns.
    In check mode it measures nothing and reports that.
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  path_port:
    description: A free loopback port inside a policy of the path (1-65535).
    type: int
    required: true
  tcp_port:
    description: A free loopback port outside every policy (1-65535).
    type: int
    required: true
  size:
    description: Bytes per message (1 to 1048576).
    type: int
    default: 64
  seconds:
    description: Seconds per port and round (0.1 to 60).
    type: float
    default: 1.0
  rounds:
    description: Rounds (1 to 20).
    type: int
    default: 3
  cgroup:
    description: A cgroup v2 directory (absolute, or relative to the v2 root) for the client.
    type: str
  name:
    description: Name the path was loaded under (O(netstack.tuning.shm_agent#module:name)), for its counters.
    type: str
    default: shm
extends_documentation_fragment:
  - netstack.tuning.state_dir
attributes:
  check_mode:
    description: Measures nothing in check mode.
    support: full
  diff_mode:
    description: Changes nothing, so there is no diff.
    support: none
seealso:
  - module: netstack.tuning.shm_agent
"""

EXAMPLES = r"""
- name: Is the same-host path carrying traffic, and how much faster is it here?
  netstack.tuning.shm_probe:
    path_port: 16380
    tcp_port: 16480
    name: site_shm
  register: probe

- name: Say it
  ansible.builtin.debug:
    msg: "path {{ probe.arms.path.rtt_us.p50 }} us vs TCP {{ probe.arms.tcp.rtt_us.p50 }} us (p50 RTT)"
"""

RETURN = r"""
arms:
  description: Per port (C(path), C(tcp)) - C(round_trips), C(round_trips_per_s), C(rtt_us) (C(p50), C(p90), C(p99)).
  returned: unless check mode
  type: dict
ratio:
  description: C(round_trips_per_s) path over TCP, and C(rtt_p50) path over TCP (below 1 is faster).
  returned: unless check mode
  type: dict
counters:
  description: The path's counters over the run (deltas of M(netstack.tuning.shm_agent)'s totals), or null when the path is not loaded.
  returned: unless check mode
  type: dict
on_path:
  description: Whether the path carried the path port's traffic (its C(shm_bytes) grew by at least what the client sent).
  returned: unless check mode
  type: bool
"""

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path, check_path_options
from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf
from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import pingpong, path as shm


def run(module):
    p = module.params
    check_path_options(p, ("state_dir",))
    if p["cgroup"] is not None:
        check_path(p["cgroup"], "cgroup", absolute=False)
    pingpong.check(p["path_port"], p["tcp_port"], p["size"], p["seconds"], p["rounds"])
    path = shm.ShmPath(p["name"], state_dir=p["state_dir"])
    procs = bpf.cgroup_path(p["cgroup"]) + "/cgroup.procs" if p["cgroup"] else None
    if module.check_mode:
        return {"changed": False, "skipped": True, "msg": "check mode: nothing measured"}
    before = path.counters()
    arms = pingpong.run([("path", p["path_port"]), ("tcp", p["tcp_port"])], size=p["size"],
                        seconds=p["seconds"], rounds=p["rounds"], cgroup_procs=procs)
    after = path.counters()
    counters = None
    if before and after:
        counters = dict((k, after["total"][k] - before["total"][k]) for k in after["total"])
    a, t = arms["path"], arms["tcp"]
    ratio = {"round_trips_per_s": round(a["round_trips_per_s"] / t["round_trips_per_s"], 3) if t["round_trips_per_s"] else None,
             "rtt_p50": round(a["rtt_us"]["p50"] / t["rtt_us"]["p50"], 3) if t["rtt_us"]["p50"] else None}
    sent = a["round_trips"] * p["size"]
    return {"changed": False, "arms": arms, "ratio": ratio, "counters": counters,
            "on_path": bool(counters) and counters["shm_bytes"] >= sent}


def main():
    module = NetstackModule(
        argument_spec=dict(
            path_port=dict(type="int", required=True),
            tcp_port=dict(type="int", required=True),
            size=dict(type="int", default=64),
            seconds=dict(type="float", default=1.0),
            rounds=dict(type="int", default=3),
            cgroup=dict(type="str"),
            name=dict(type="str", default="shm"),
            state_dir=dict(type="path", default="/var/lib/netstack"),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except NetstackError as e:
        module.fail_json(**e.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
