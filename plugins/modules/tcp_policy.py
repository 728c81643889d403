#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tcp_policy
short_description: Declarative per-connection TCP rules for the tcp_tuner eBPF program
version_added: 0.1.0
description:
  - Writes a list of rules to the pinned maps of C(bpf/tcp_tuning.bpf.c) (loaded with
    M(netstack.tuning.bpf_program)). Each new TCP connection in the program's cgroup is
    matched against the rules, first match wins, and gets the rule's settings.
  - Rules match on the remote prefix, remote and local port ranges, and on what the
    existing flows to the same peer look like (C(peer_active_flows_gt),
    C(peer_long_flows_gt); a flow is long once O(long_flow_bytes) were acknowledged).
  - Settings are the congestion control, initial congestion window, minimum RTO,
    delayed-ACK maximum, C(SO_SNDBUF)/C(SO_RCVBUF), cwnd clamp, C(TCP_NOTSENT_LOWAT) and
    the SYN retransmission timeout.
  - Rules are validated by JSON Schema and by checks against the host (the congestion
    control must be in C(net.ipv4.tcp_available_congestion_control)); errors name the
    rule and the field, and nothing is written.
  - The program keeps two rule sets; a change fills the inactive one and flips, so each
    connection sees either the old or the new rules. Changes apply to new connections.
  - Compares with what the kernel maps hold (not a cache); C(changed) only when the
    encoded rules differ; the diff shows the rules before and after.
  - Returns the rules in force with their hit and error counters, and the per-peer flow state.
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  program:
    description: Name the program set was loaded under (the O(netstack.tuning.bpf_program#module:name) option of M(netstack.tuning.bpf_program)).
    type: str
    default: tcp_tuner
  rules:
    description:
      - The rules, in priority order (at most 32). Each is a dict with C(name), C(match)
        (C(remote) CIDR, C(remote_ports) and C(local_ports) as a port or C(lo-hi),
        C(peer_active_flows_gt), C(peer_long_flows_gt)) and C(set) (C(congestion_control),
        C(initial_cwnd), C(rto_min_ms), C(delack_max_ms), C(sndbuf), C(rcvbuf), C(cwnd_clamp),
        C(notsent_lowat), C(syn_rto_ms)).
    type: list
    elements: dict
    default: []
  long_flow_bytes:
    description: Bytes acknowledged after which a flow counts as long (1 to 2**48, 256 TiB).
    type: int
    default: 1048576
  track_flows:
    description:
      - Keep per-peer flow counts. Default (unset) is on exactly when a rule has a flow condition.
    type: bool
  kernel_hz:
    description: Jiffies per second of the host kernel (for C(syn_rto_ms)), 1 to 100000; read from the kernel config when unset.
    type: int
  state:
    description: V(present) installs O(rules); V(absent) publishes an empty rule set (connections get defaults).
    type: str
    choices: [present, absent]
    default: present
  pin_root:
    description: Root of the netstack pins (an absolute path).
    type: path
    default: /sys/fs/bpf/netstack
extends_documentation_fragment:
  - netstack.tuning.attributes
  - netstack.tuning.state_dir
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Rule names are kept in C(<state_dir>/bpf/<program>.policy.json) (the maps hold only the encoded rules).
  - Needs the program loaded first, for example by the role C(netstack.tuning.tcp_tuning).
seealso:
  - module: netstack.tuning.bpf_program
"""

EXAMPLES = r"""
- name: CUBIC with a large initial window inside the DC, BBR and a clamp when a peer already has bulk flows
  netstack.tuning.tcp_policy:
    rules:
      - name: dc-short
        match: {remote: 198.18.0.0/15, remote_ports: "80-443"}
        set: {congestion_control: cubic, initial_cwnd: 32, rto_min_ms: 20, delack_max_ms: 5}
      - name: bulk-peer
        match: {remote: 198.18.0.0/15, peer_long_flows_gt: 2}
        set: {cwnd_clamp: 64, notsent_lowat: 131072}

- name: Back to kernel defaults for new connections
  netstack.tuning.tcp_policy:
    state: absent
"""

RETURN = r"""
rules:
  description: The rules in force after the task, with C(hits) and C(errors) (setsockopt calls the kernel refused).
  returned: always
  type: list
  elements: dict
peers:
  description: Per-peer flow state (C(peer), C(active_flows), C(long_flows), C(flows), C(bytes_closed)).
  returned: always
  type: list
  elements: dict
active_set:
  description: Which of the two rule sets is in force.
  returned: always
  type: int
kernel_hz:
  description: Jiffies per second used to convert C(syn_rto_ms).
  returned: always
  type: int
"""

import json
import os

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path_options
from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf_engine
from ansible_collections.netstack.tuning.plugins.module_utils.core import kstate
from ansible_collections.netstack.tuning.plugins.module_utils.tcp_tuning import policy as tcppolicy


def run(module):
    p = module.params
    check_path_options(p, ["pin_root", "state_dir"])
    if not bpf_engine.NAME_RE.match(p["program"] or ""):
        raise NetstackError("not a program set name", field="program")
    hz, notes = tcppolicy.effective_hz(p["kernel_hz"])
    rules = p["rules"] if p["state"] == "present" else []
    norm, encoded, flags = tcppolicy.plan(rules, p["long_flow_bytes"], p["track_flows"], hz)
    engine = bpf_engine.Engine(p["state_dir"])
    names_file = os.path.join(engine.state_dir, "%s.policy.json" % p["program"])
    try:
        with open(names_file) as f:
            known = json.load(f)
    except (IOError, OSError, ValueError):
        known = {}
    pol = tcppolicy.Policy(os.path.join(p["pin_root"], p["program"]))
    try:
        with engine.lock(p["program"] + "-policy", module.check_mode):
            cfg, current = pol.active_raw()
            changed = current != encoded or cfg["flags"] != flags or cfg["long_bytes"] != p["long_flow_bytes"]
            before = []
            for i, raw in enumerate(current):
                d = tcppolicy.decode_rule(raw, hz)
                d["name"] = known.get(raw.hex(), "(unnamed #%d)" % i)
                before.append(d)
            after = tcppolicy.public(norm)
            result = {"changed": changed, "notes": notes, "kernel_hz": hz}
            if module._diff:
                hdr = "tcp_policy %s" % p["program"]
                result["diff"] = {
                    "before_header": hdr, "after_header": hdr,
                    "before": "long_flow_bytes: %d\ntrack_flows: %s\n%s" % (cfg["long_bytes"], bool(cfg["flags"] & 1),
                                                                            tcppolicy.render(before)),
                    "after": "long_flow_bytes: %d\ntrack_flows: %s\n%s" % (p["long_flow_bytes"], bool(flags & 1),
                                                                           tcppolicy.render(after))}
            if changed and not module.check_mode:
                engine.lock_dir()
                kstate.atomic_write(names_file, json.dumps({raw.hex(): r["name"] for raw, r in zip(encoded, norm)},
                                                           sort_keys=True), 0o600)
                new = pol.write(encoded, flags, p["long_flow_bytes"])
                engine.event(p["program"], "rules", "tcp_policy published %d rule(s) as set %d (was %d rule(s))"
                             % (len(encoded), new, len(current)), rules=[r["name"] for r in norm])
                shown = after
            else:
                shown = after if changed else [dict(d) for d in before]
            counters = pol.counters(len(encoded) if (changed and not module.check_mode) else len(current))
            if changed and module.check_mode:
                counters = [{"hits": None, "errors": None}] * len(shown)
            for r, c in zip(shown, counters):
                r.update(c)
                r.pop("valid", None)
            cfg = pol.config()
            result.update(rules=shown, peers=pol.peers(), active_set=cfg["active_set"])
            return result
    finally:
        pol.close()


def main():
    module = NetstackModule(
        argument_spec=dict(
            program=dict(type="str", default="tcp_tuner"),
            rules=dict(type="list", elements="dict", default=[]),
            long_flow_bytes=dict(type="int", default=1048576),
            track_flows=dict(type="bool"),
            kernel_hz=dict(type="int"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            pin_root=dict(type="path", default="/sys/fs/bpf/netstack"),
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
