#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: shm_agent
short_description: Transparent same-host path for TCP (eBPF sockops + sk_msg), kept by netstack-agent
version_added: 0.1.0
description:
  - Same-host TCP connections that match a policy are spliced by eBPF with no change to the
    applications. A cgroup C(sock_ops) program marks each established connection whose two
    addresses are this host's (O(local_addresses)) and whose service port is in a policy;
    it joins a sockhash as O(capture) says, and an C(sk_msg) program then moves every send
    straight into the peer socket's receive queue. The TCP handshake, FIN and RST still use
    TCP.
  - Each direction of a connection uses one path for its whole life (the first payload
    decides); a connection without a peer on the path stays on TCP, so bytes always arrive in
    order. Connections outside the policy are not touched.
  - Writes the desired state to the netstack-agent config (C(<config_dir>/shm.json)), asks a
    running agent to reload (SIGHUP), and applies the change at once, so the task result is
    exact. The agent restores the path from that config after a restart or reboot and
    exports its counters as Prometheus metrics (role C(netstack.tuning.netstack_agent)).
  - Policy changes apply to new connections; connections already on the path keep it until
    they close.
  - V(absent) detaches and unpins the programs. Connections already on the path keep
    working until they close (each holds its own reference to the program); new ones use TCP.
  - The policy is validated by JSON Schema and by checks a schema cannot express; an error
    names the field and nothing is changed.
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  state:
    description: Whether the path is on.
    type: str
    choices: [present, absent]
    default: present
  policies:
    description:
      - At most 16 policies, first match counts. Each is a dict with C(name) and C(ports)
        (a port or C(lo-hi)); a connection matches when its service port (the one the
        server listens on) is in range; client ephemeral ports never match.
      - Optional C(max_queue) (bytes, 16384 to 1073741824) bounds what one direction of a
        connection may hold queued at its reader on the path (a fixed bound). The default
        is the reader's SO_RCVBUF, grown as TCP's receive autotuning grows it while the
        reader reads (up to its C(net.ipv4.tcp_rmem) maximum). Past the bound the direction
        goes over TCP, whose flow control stops the sender, and comes back once TCP has
        drained.
      - Required when O(state=present).
    type: list
    elements: dict
  local_addresses:
    description:
      - Prefixes that count as this host's addresses (at most 16). Both ends of a connection
        must be in them. Add the host's own addresses to splice connections made to them.
    type: list
    elements: str
    default: ["127.0.0.0/8", "::1/128"]
  cgroup:
    description: cgroup v2 path (relative to the cgroup v2 root) whose processes are seen.
    type: str
    default: /
  capture:
    description:
      - When a matching connection joins the path.
      - V(segments) (a tc program on this namespace's C(lo), clsact ingress, pref 100) lets a
        connection join once each direction has carried O(capture_segments) data segments, none
        larger than O(capture_max_segment) bytes. A connection with a larger segment stays plain
        TCP for its whole life, because on the path large messages are slower than over TCP.
        Connections of other network namespaces stay on TCP.
      - V(handshake) lets every matching connection join at establishment (no tc program); bulk
        transfers then run slower than over TCP.
    type: str
    choices: [segments, handshake]
    default: segments
  capture_segments:
    description: For O(capture=segments), data segments each direction carries over TCP before the connection joins (1-64).
    type: int
    default: 8
  capture_max_segment:
    description: For O(capture=segments), the largest data segment (bytes, 1024-1048576) that still lets a connection join.
    type: int
    default: 32768
  name:
    description: Name of the program set (pins under C(/sys/fs/bpf/netstack/<name>)).
    type: str
    default: shm
extends_documentation_fragment:
  - netstack.tuning.attributes
  - netstack.tuning.state_dir
  - netstack.tuning.agent
  - netstack.tuning.bpf_source
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Needs bcc on the host (role C(netstack.tuning.bcc_runtime)) and a cgroup v2 hierarchy.
  - The peer's receive queue has no per-socket limit on this path (the kernel bounds it by
    C(net.ipv4.tcp_mem) only); see docs/shm_path.md.
seealso:
  - module: netstack.tuning.bpf_program
"""

EXAMPLES = r"""
- name: Splice redis and the local web tier on this host
  netstack.tuning.shm_agent:
    policies:
      - {name: redis, ports: 6379}
      - {name: web, ports: "8000-8099"}
    local_addresses: ["127.0.0.0/8", "::1/128", "{{ ansible_default_ipv4.address }}/32"]

- name: Turn it off (open connections finish on the path; new ones use TCP)
  netstack.tuning.shm_agent:
    state: absent
"""

RETURN = r"""
policy:
  description: The policy in force after the task (read back from the kernel maps).
  returned: always
  type: dict
counters:
  description:
    - Per policy and in total - C(captured), C(capture_errors), C(shm_conns), C(tcp_conns),
      C(shm_msgs), C(shm_bytes), C(tcp_msgs), C(tcp_bytes), C(overflows) (directions that
      reached max_queue and went over TCP), C(resumes) (directions that came onto the path
      after TCP drained), C(grows) (a reading reader's default bound doubled); and C(sockets)
      on the path now.
  returned: when the path is on
  type: dict
draining:
  description: With O(state=absent), sockets that were on the path and keep it until they close.
  returned: when state is absent
  type: int
agent:
  description: C(pid) of the running netstack-agent (null if none) and whether it was told to reload.
  returned: always
  type: dict
config_file:
  description: The agent drop-in file this module keeps.
  returned: always
  type: str
"""

import json
import os

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path_options
from ansible_collections.netstack.tuning.plugins.module_utils.agent import control as agent_engine
from ansible_collections.netstack.tuning.plugins.module_utils.shm_path import path as shm


def run(module):
    p = module.params
    check_path_options(p, ["config_dir", "state_dir"])
    check_path_options(p, ["cgroup"], absolute=False)
    path = shm.ShmPath(name=p["name"], state_dir=p["state_dir"])
    if p["state"] == "present":
        if not p["source_text"]:
            raise NetstackError("the BPF source was not passed (run the module through its action plugin, "
                                "or set source_text)", field="source_text")
        want = {"policies": p["policies"], "local_addresses": p["local_addresses"], "cgroup": p["cgroup"],
                "capture": p["capture"]}
        if p["capture"] == "segments":
            want.update(capture_segments=p["capture_segments"], capture_max_segment=p["capture_max_segment"])
        norm = shm.validate(want, field="")
        section = {"state": "present", "name": p["name"], "policy": shm.public(norm)}
    else:
        section = {"state": "absent", "name": p["name"]}
    # The desired state first, then the agent told, then the change: an agent that runs a
    # periodic pass meanwhile already sees the new config.
    cfg_changed = agent_engine.write_section(p["config_dir"], "shm", section, check_mode=module.check_mode)
    pid = agent_engine.running()
    told = False
    if cfg_changed and pid and p["notify_agent"] and not module.check_mode:
        agent_engine.notify()
        told = True
    if p["state"] == "present":
        res = path.present(section["policy"], p["source_text"], check_mode=module.check_mode,
                           origin="netstack.tuning.shm_agent")
    else:
        res = path.absent(check_mode=module.check_mode)
    result = {"changed": bool(res["changed"] or cfg_changed), "config_file": os.path.join(p["config_dir"], "shm.json"),
              "agent": {"pid": pid, "reloaded": told}, "notes": res.get("notes", [])}
    after = res.get("after")
    result["policy"] = (after or {}).get("policy") if p["state"] == "present" else None
    if p["state"] == "present":
        result["counters"] = path.counters()
    else:
        result["draining"] = res.get("draining", 0)
        result["removed"] = res.get("removed", [])
    if not pid:
        result["notes"].append("netstack-agent is not running here: the path is on now, but nothing restores it "
                               "after a reboot or exports its metrics (role netstack.tuning.netstack_agent)")
    if module._diff:
        hdr = "same-host path %s" % p["name"]
        result["diff"] = {"before_header": hdr, "after_header": hdr,
                          "before": json.dumps(res.get("before"), indent=2, sort_keys=True) + "\n",
                          "after": json.dumps(after, indent=2, sort_keys=True) + "\n"}
    return result


def main():
    module = NetstackModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            policies=dict(type="list", elements="dict"),
            local_addresses=dict(type="list", elements="str", default=["127.0.0.0/8", "::1/128"]),
            cgroup=dict(type="str", default="/"),
            capture=dict(type="str", default="segments", choices=["segments", "handshake"]),
            capture_segments=dict(type="int", default=8),
            capture_max_segment=dict(type="int", default=32768),
            name=dict(type="str", default="shm"),
            config_dir=dict(type="path", default="/etc/netstack/agent.d"),
            notify_agent=dict(type="bool", default=True),
            state_dir=dict(type="path", default="/var/lib/netstack"),
            source_text=dict(type="str", no_log=False),
        ),
        required_if=[("state", "present", ("policies",))],
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except NetstackError as e:
        module.fail_json(**e.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
