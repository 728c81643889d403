#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sysctl_trial
short_description: One tuning trial - apply sysctls, benchmark nginx with wrk, revert
version_added: 0.1.0
description:
  - Runs on the host under test. Builds a lab (nginx in one network namespace, wrk in
    another, a veth pair between them, addresses in 198.18.0.0/15), applies O(sysctls)
    commit-confirmed through the journal (net.* keys that exist per namespace in the
    server's namespace, every other key on the host), benchmarks, and rolls the change
    back. The host ends the trial as it started.
  - If the module's process dies mid-trial (the controller was killed, the connection
    dropped), the host's watchdog reverts the host-wide keys at the confirm deadline and a
    detached reaper removes the lab's namespaces and nginx.
  - Used by the M(netstack.tuning.sysctl_study) action; usable alone for one measurement.
  - O(action=inspect) returns the current values and scope (netns or host) of O(keys).
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  action:
    description: V(run) a trial, or V(inspect) the current values of O(keys).
    type: str
    choices: [run, inspect]
    default: run
  sysctls:
    description:
      - Sysctls to apply for the trial; empty measures the kernel defaults.
      - Checked before the lab starts (in check mode too) - each name (no path tricks), each
        value (integers in ASCII digits, at most 20; no floats, NaN or exponents) and its shape
        against the key's current value on the host (an integer key takes one integer,
        C(net.ipv4.tcp_rmem) three). A key the host does not have is refused.
    type: dict
    default: {}
  keys:
    description: Sysctl names to inspect.
    type: list
    elements: str
    default: []
  live:
    description:
      - With O(action=inspect), V(false) reads C(net.*) keys as a fresh network namespace has
        them (where a lab trial starts); V(true) reads every key as this host has it now (where
        a study with a remote client, which tunes the host itself, starts).
    type: bool
    default: false
  bench:
    description:
      - Benchmark settings, keys C(nginx_mode) (static or proxy), C(payload_bytes),
        C(connections), C(threads), C(duration), C(warmup), C(repeats),
        C(worker_processes), C(timeout), C(listen_backlog); see M(netstack.tuning.http_bench).
      - C(keepalive) (default true) false opens a new connection per request.
      - C(path) puts an impaired network path between wrk and nginx, per direction C(up) (requests) and C(down)
        (responses) - C(delay_ms), C(jitter_ms), C(loss_pct), C(gilbert) (C(p_pct), C(r_pct), C(loss_bad_pct)),
        C(reorder_pct), C(rate_mbit), C(queue_kbytes) - and C(backend) (auto, tun or netem); see docs/tuning.md.
      - Each value is checked as M(netstack.tuning.http_bench) checks the option of that name
        (for example C(duration) 1 to 3600, C(repeats) 1 to 100); an error names C(bench.<key>).
    type: dict
    default: {}
  tune_client:
    description:
      - Apply the per-namespace (C(net.*)) keys of O(sysctls) in the lab's client namespace (where
        wrk runs) as well as the server's, in the same journal transaction.
    type: bool
    default: false
  repeats:
    description: Overrides C(bench.repeats); 1 to 100.
    type: int
  prune_p99_above:
    description:
      - Stop after the first run when its p99 (ms) is above this (a clearly bad trial).
      - A finite number from 0 to 3600000; 0 never prunes.
    type: float
  confirm_timeout:
    description: Seconds after which the host reverts the trial by itself; 1 to 604800 (a week).
    type: int
    default: 300
extends_documentation_fragment:
  - netstack.tuning.state_dir
attributes:
  check_mode:
    description: In check mode nothing runs; the module validates its input (as in real mode) and returns.
    support: full
  diff_mode:
    description: No diff; the trial changes nothing lasting.
    support: none
seealso:
  - module: netstack.tuning.http_bench
  - module: netstack.tuning.sysctl_set
"""

EXAMPLES = r"""
- name: Measure one candidate set
  netstack.tuning.sysctl_trial:
    sysctls:
      net.core.somaxconn: 4096
      net.ipv4.tcp_slow_start_after_idle: 0
    bench: {duration: 5, repeats: 3, connections: 16}
  register: trial
"""

RETURN = r"""
ok:
  description: Whether the trial ran to the end.
  returned: always
  type: bool
metrics:
  description: Medians over repeats (C(p50), C(p90), C(p99), C(p999) in ms, C(rps)), C(errors), per-repeat C(samples), C(spread).
  returned: when ok
  type: dict
pruned:
  description: The trial stopped after its first run because it was clearly worse.
  returned: always
  type: bool
applied:
  description: Keys that were changed for the trial (key, before, after, netns).
  returned: always
  type: list
  elements: dict
scopes:
  description: Key to C(netns) or C(host).
  returned: always
  type: dict
current:
  description: Current values of O(keys) (V(inspect)).
  returned: with action inspect
  type: dict
"""

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path_options
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import trial


def run(module):
    p = module.params
    check_path_options(p, ["state_dir"])
    if p["action"] == "inspect":
        return dict(changed=False, **trial.inspect(p["keys"], live=p["live"]))
    # every number, bench setting, sysctl name and value (its shape against this host's
    # current value): refused here, in check mode as in real mode, before the lab starts
    trial.validate(p["sysctls"], p["bench"], p["confirm_timeout"], p["prune_p99_above"], p["repeats"])
    if module.check_mode:
        return dict(changed=False, ok=True, pruned=False, applied=[], scopes={}, skipped=True)
    res = trial.run(p["sysctls"], p["bench"], p["confirm_timeout"], p["state_dir"], p["prune_p99_above"],
                    p["repeats"], tune_client=p["tune_client"])
    return dict(changed=False, **res)


def main():
    module = NetstackModule(
        argument_spec=dict(
            action=dict(type="str", default="run", choices=["run", "inspect"]),
            sysctls=dict(type="dict", default={}),
            keys=dict(type="list", elements="str", default=[], no_log=False),
            live=dict(type="bool", default=False),
            tune_client=dict(type="bool", default=False),
            bench=dict(type="dict", default={}),
            repeats=dict(type="int"),
            prune_p99_above=dict(type="float"),
            confirm_timeout=dict(type="int", default=300),
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
