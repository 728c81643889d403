#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cpu_partition
short_description: Partition CPUs between the network stack and applications (AMP)
version_added: 0.1.0
description:
  - Reserves a set of CPUs for the kernel network stack and fences applications onto the
    rest. The network set gets the interfaces' queue IRQs (one queue per CPU, round robin)
    and receive packet steering (C(rps_cpus)) (optionally the RFS flow tables, O(rfs)); the
    applications' cgroups (cgroup v2 cpuset where the controller is there, the v1 cpuset
    hierarchy otherwise) or systemd units (C(AllowedCPUs), runtime only) get the others.
    With O(xps) and several transmit queues, every CPU is mapped to one transmit queue.
  - The network set grows in whole cores (SMT siblings together), NUMA-local to the
    interfaces first, lowest CPU first.
  - Every write goes through the netstack journal (C(/var/lib/netstack)); V(absent) writes
    back the value each key had before the partition first changed it, removes the cgroups
    it created (their tasks move to the parent) and restores the irqbalance defaults file.
  - Where irqbalance is installed it would move the pinned IRQs back; with
    O(irqbalance=ban) the NIC IRQs (C(--banirq)) and the application CPUs
    (C(IRQBALANCE_BANNED_CPULIST)) are banned in C(/etc/default/irqbalance) and a running
    irqbalance is restarted when systemd runs it (a warning says so otherwise).
  - With O(controller), the partition is handed to netstack-agent, which resizes the
    network set from softirq load, time_squeeze and an optional latency probe (see the
    C(netstack.tuning.amp_partition) role and C(docs/amp.md)); the module then keeps the size
    the agent chose and only applies the rest of the spec.
  - Kernel-managed IRQs (their affinity cannot be written) are left alone and listed in
    RV(skipped_irqs).
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  name:
    description: Name of the partition (its record is C(<state_dir>/amp/<name>.json)).
    type: str
    default: amp
  state:
    description: Whether the partition is in force.
    type: str
    choices: [present, absent]
    default: present
  net_cpus:
    description:
      - V(auto) (one core in eight, at least one), a number of CPUs (rounded up to whole
        cores), or a CPU list (V(0-1,8) or a YAML list). Must leave at least one CPU to
        applications.
      - Digits alone (V(2)) are a count; a CPU list is written in ASCII digits and every CPU
        number in it is below 8192 (the kernel's largest C(NR_CPUS)).
    type: raw
    default: auto
  interfaces:
    description: Interfaces whose IRQs and queues follow the network set (V(lo) and veth work; they have no IRQs).
    type: list
    elements: str
  app_cgroups:
    description:
      - cgroups fenced onto the application CPUs, relative to the cpuset hierarchy root (or
        absolute under C(/sys/fs/cgroup)). Missing ones are created (and removed by V(absent)).
      - O(app_cgroups) or O(app_units) is required with O(state=present).
    type: list
    elements: str
    default: []
  app_units:
    description: systemd units fenced with C(AllowedCPUs) (runtime property; needs systemd).
    type: list
    elements: str
    default: []
  rfs:
    description:
      - Set C(net.core.rps_sock_flow_entries) and each receive queue's C(rps_flow_cnt).
      - Off by default. RFS steers a packet to the CPU where its consumer last read, ahead of
        the RPS map; under a partition the consumers run on the application CPUs, so RFS moves
        the receive work back onto them (measured in C(benchmarks/results/amp.md)).
    type: bool
    default: false
  rps_sock_flow_entries:
    description: Size of the global RFS table (a power of two).
    type: int
    default: 32768
  xps:
    description: Map every CPU to one transmit queue when an interface has several.
    type: bool
    default: true
  irqbalance:
    description: V(ban) keeps irqbalance off the pinned IRQs and application CPUs; V(ignore) leaves it.
    type: str
    choices: [ban, ignore]
    default: ban
  controller:
    description:
      - Hand the partition to netstack-agent's AMP controller. Keys (all optional)
        C(enabled) (default true), C(interval) (s, 2), C(high) (0.6) and C(low) (0.2)
        watermarks of the network CPUs' softirq+irq share, C(grow_after) (3) and
        C(shrink_after) (10) consecutive samples, C(cooldown) (s, 20), C(min_cores),
        C(max_cores), C(min_app_cores), C(app_high) (0.9, a grow is held when the
        applications would run at or above it on one core fewer), C(squeeze_per_s) (50), C(latency_high_us), and
        C(probe) (C(host), C(port), C(count)), a TCP connect-time probe.
      - Omitted, the partition is static and the agent leaves it alone.
    type: dict
extends_documentation_fragment:
  - netstack.tuning.attributes
  - netstack.tuning.state_dir
  - netstack.tuning.agent
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Writes IRQ affinity, sysfs queue files, one sysctl, cpuset files and C(/etc/default/irqbalance);
    nothing persists across a reboot except that file (the agent re-applies the partition at start).
seealso:
  - module: netstack.tuning.netstack_journal
"""

EXAMPLES = r"""
- name: One core for the network stack, redis fenced onto the rest
  netstack.tuning.cpu_partition:
    net_cpus: 1
    interfaces: [eth0]
    app_cgroups: [netstack-app]

- name: Dynamic, the agent resizes the network set between 1 and 4 cores
  netstack.tuning.cpu_partition:
    interfaces: [eth0, eth1]
    app_units: [redis-server.service]
    controller:
      high: 0.6
      low: 0.2
      max_cores: 4
      probe: {host: 127.0.0.1, port: 6379}

- name: Restore every original value
  netstack.tuning.cpu_partition:
    state: absent
"""

RETURN = r"""
net_cpus:
  description: The network CPU set now in force.
  returned: state is present
  type: str
  sample: "0-1"
app_cpus:
  description: The application CPU set now in force.
  returned: state is present
  type: str
  sample: "2-7"
plan:
  description: Every mask the partition writes (IRQs, RPS, XPS, RFS) and notes on how it chose.
  returned: state is present
  type: dict
journal_id:
  description: Journal entry of the change (roll back with netstack.tuning.netstack_journal).
  returned: always
  type: str
skipped_irqs:
  description: IRQs whose affinity the kernel does not let anyone set, with why.
  returned: state is present
  type: dict
restored:
  description: Keys written back to their original values.
  returned: state is absent
  type: list
warnings_text:
  description: Conditions that need an operator (for example irqbalance running outside systemd).
  returned: always
  type: list
config_file:
  description: The agent drop-in this module keeps (when O(controller) is set or was set).
  returned: always
  type: str
"""

import json
import os

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path_options
from ansible_collections.netstack.tuning.plugins.module_utils.agent import control as agent_engine
from ansible_collections.netstack.tuning.plugins.module_utils.amp import partition as amp, controller as ampctl


def spec_of(p):
    return {"name": p["name"], "net_cpus": p["net_cpus"], "interfaces": p["interfaces"] or [],
            "app_cgroups": p["app_cgroups"], "app_units": p["app_units"], "rfs": p["rfs"],
            "rps_sock_flow_entries": p["rps_sock_flow_entries"], "xps": p["xps"], "irqbalance": p["irqbalance"]}


def check_dir_option(path, field):
    """A directory option, read-only: a directory, or a path that can be created (its
    nearest existing ancestor a directory).  A file there was a FileExistsError traceback
    at the config write, after the partition had been applied."""
    d = path
    while not os.path.lexists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise NetstackError("%s exists and is not a directory" % d, field=field)


def run(module):
    p = module.params
    check_path_options(p, ["config_dir", "state_dir"])
    check_path_options(p, ["app_cgroups"], absolute=False)
    check_dir_option(p["config_dir"], "config_dir")
    part = amp.Partition(p["name"], state_dir=p["state_dir"])
    part.check_state_dir()   # a file there: an error naming state_dir before anything is read or written
    cfg_file = os.path.join(p["config_dir"], "amp.json")
    if p["state"] == "present":
        spec = amp.validate(spec_of(p))
        if p["controller"] is not None:
            section = {"state": "present", "partition": spec, "controller": ampctl.check_controller(p["controller"])}
        else:
            section = None
        # the partition first (it validates against the host), then the agent's config
        res = part.present(spec, check_mode=module.check_mode, keep_size=section is not None,
                           source="netstack.tuning.cpu_partition")
        cfg_changed = agent_engine.write_section(p["config_dir"], "amp", section, check_mode=module.check_mode)
    else:
        # the agent first, so its controller stops before the values go back
        section = {"state": "absent", "partition": {"name": p["name"]}} if os.path.exists(cfg_file) else None
        cfg_changed = agent_engine.write_section(p["config_dir"], "amp", section, check_mode=module.check_mode)
        if cfg_changed and agent_engine.running() and p["notify_agent"] and not module.check_mode:
            agent_engine.notify()
        res = part.absent(check_mode=module.check_mode, source="netstack.tuning.cpu_partition")
    pid = agent_engine.running()
    told = False
    if p["state"] == "present" and cfg_changed and pid and p["notify_agent"] and not module.check_mode:
        agent_engine.notify()
        told = True
    result = {"changed": bool(res["changed"] or cfg_changed), "journal_id": res["journal_id"],
              "warnings_text": res.get("warnings", []), "config_file": cfg_file,
              "agent": {"pid": pid, "reloaded": told}}
    if p["state"] == "present":
        result.update(net_cpus=res["net_cpus"], app_cpus=res["app_cpus"], plan=res["plan"],
                      skipped_irqs=res["skipped_irqs"])
        if section is not None and not pid:
            result["warnings_text"].append("netstack-agent is not running: the partition is static until it starts "
                                           "(role netstack.tuning.netstack_agent)")
    else:
        result["restored"] = res["restored"]
    for w in result["warnings_text"]:
        module.warn(w)
    if module._diff:
        hdr = "cpu partition %s" % p["name"]
        result["diff"] = {"before_header": hdr, "after_header": hdr,
                          "before": json.dumps(res["diff"]["before"], indent=2, sort_keys=True) + "\n",
                          "after": json.dumps(res["diff"]["after"], indent=2, sort_keys=True) + "\n"}
    return result


def main():
    module = NetstackModule(
        argument_spec=dict(
            name=dict(type="str", default="amp"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            net_cpus=dict(type="raw", default="auto"),
            interfaces=dict(type="list", elements="str"),
            app_cgroups=dict(type="list", elements="str", default=[]),
            app_units=dict(type="list", elements="str", default=[]),
            rfs=dict(type="bool", default=False),
            rps_sock_flow_entries=dict(type="int", default=32768),
            xps=dict(type="bool", default=True),
            irqbalance=dict(type="str", default="ban", choices=["ban", "ignore"]),
            controller=dict(type="dict"),
            config_dir=dict(type="path", default="/etc/netstack/agent.d"),
            notify_agent=dict(type="bool", default=True),
            state_dir=dict(type="path", default="/var/lib/netstack"),
        ),
        required_if=[("state", "present", ("interfaces",))],
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except NetstackError as e:
        module.fail_json(**e.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
