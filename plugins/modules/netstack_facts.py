#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: netstack_facts
short_description: Probe what a host's network stack can do (BPF, qdiscs, zerocopy, CPUs, IRQs, cgroups)
version_added: 0.1.0
description:
  - Gathers the facts every other netstack.tuning capability plans with, under
    C(ansible_facts.netstack).
  - Capabilities are probed, not guessed from the kernel version. BPF program types are
    loaded and map types created with the C(bpf) syscall; qdiscs are installed on C(lo) of a
    throwaway network namespace that vanishes with a forked child; C(MSG_ZEROCOPY) is enabled
    on a socket; an C(io_uring) ring is set up and its opcodes probed.
  - Nothing on the host changes. Every probe object is closed and every namespace the probe
    makes is private to a child process that exits.
  - Other tuners (tuned, irqbalance, bpftune) and sysctl.d files are reported so that the
    capabilities can detect conflicts.
  - docs/facts.md in the collection describes every fact and how it is probed.
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  gather_subset:
    description:
      - Which probes to run. V(all) runs every probe.
    type: list
    elements: str
    choices: [all, kernel, bpf, bcc, tcp, qdiscs, zerocopy, cpu, interfaces, cgroups, tuners]
    default: [all]
  netns:
    description:
      - Name of a network namespace (as in C(ip netns)) to look into. The namespace-dependent
        probes (V(tcp) and V(interfaces)) run inside it; the rest describe the host.
      - The module fails, naming this option, when the namespace does not exist.
    type: str
extends_documentation_fragment:
  - netstack.tuning.attributes
attributes:
  check_mode:
    support: full
    details: The module never changes anything, so check mode runs it unchanged.
  diff_mode:
    support: none
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
notes:
  - Needs root (C(CAP_SYS_ADMIN)/C(CAP_BPF), C(CAP_NET_ADMIN)) for the BPF, qdisc and netns
    probes; without it they report the kernel's C(EPERM).
  - Supports Linux on x86_64 and aarch64.
  - The C(bcc) probe runs C(/usr/bin/python3), the interpreter distribution bcc packages
    install into, whichever interpreter runs the module.
seealso:
  - module: ansible.builtin.setup
"""

EXAMPLES = r"""
- name: Gather every netstack fact
  netstack.tuning.netstack_facts:

- name: Only what BPF-based capabilities need
  netstack.tuning.netstack_facts:
    gather_subset: [kernel, bpf, bcc]

- name: Refuse hosts where the sockops program cannot load
  ansible.builtin.assert:
    that: ansible_facts.netstack.bpf.prog_types.sock_ops
    fail_msg: "{{ ansible_facts.netstack.bpf.prog_type_errors.sock_ops | default('sock_ops does not load') }}"

- name: Interfaces, queues and IRQs inside a lab namespace
  netstack.tuning.netstack_facts:
    gather_subset: [interfaces]
    netns: lab1
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: dict
  contains:
    netstack:
      description: One entry per probe that ran, plus C(gather_subset) and, with O(netns), C(netns).
      returned: always
      type: dict
      contains:
        kernel:
          description: C(release), C(version), C(arch) and C(version_tuple) of the running kernel.
          returned: when V(kernel) is gathered
          type: dict
          sample: {release: 6.1.0-18-amd64, version: "#1 SMP PREEMPT_DYNAMIC", arch: x86_64, version_tuple: [6, 1, 0]}
        bpf:
          description:
            - C(prog_types) and C(map_types), name to whether it loads/creates, with the kernel's
              errno (and last verifier line) in C(prog_type_errors)/C(map_type_errors).
            - C(btf_vmlinux), C(kprobes) (kprobe PMU or tracefs kprobe_events present),
              C(kprobe_pmu), C(uprobe_pmu), C(tracefs) mounts, C(bpffs), C(jit_enable),
              C(unprivileged_bpf_disabled).
          returned: when V(bpf) is gathered
          type: dict
          sample: {prog_types: {sock_ops: true, sk_msg: true}, btf_vmlinux: true, kprobes: false}
        bcc:
          description:
            - C(importable), C(version) and C(error) of C(import bcc) under C(python).
            - C(kernel_headers.status) is V(exact), V(fallback) (the build link points at another
              kernel's headers, in C(target)) or V(missing).
          returned: when V(bcc) is gathered
          type: dict
        tcp:
          description: Available, allowed and default congestion controls, and C(loadable) modules on disk.
          returned: when V(tcp) is gathered
          type: dict
        qdiscs:
          description: C(probed) qdisc name to whether it installs, C(errors), C(available), C(default_qdisc).
          returned: when V(qdiscs) is gathered
          type: dict
        zerocopy:
          description: C(msg_zerocopy), C(optmem_max) and C(io_uring) (C(available), C(send_zc), C(disabled), bindings).
          returned: when V(zerocopy) is gathered
          type: dict
        cpu:
          description: Online CPUs, C(count), SMT state and sibling groups, C(packages), C(numa_nodes), C(isolated).
          returned: when V(cpu) is gathered
          type: dict
        interfaces:
          description:
            - C(devices), per interface C(mtu), C(operstate), C(driver), C(numa_node),
              C(rx_queues) (C(rps_cpus), C(rps_flow_cnt)), C(tx_queues) (C(xps_cpus)) and
              C(irqs) (number, name, C(smp_affinity_list)); and C(rps_sock_flow_entries).
          returned: when V(interfaces) is gathered
          type: dict
        cgroups:
          description: C(mode) (v1, v2, hybrid), C(v2_mounts), C(v1_mounts) with controllers, and C(cpuset) (version and path).
          returned: when V(cgroups) is gathered
          type: dict
          sample: {mode: hybrid, cpuset: {version: 1, path: /sys/fs/cgroup/cpuset}}
        tuners:
          description: C(tuned), C(irqbalance), C(bpftune) (running, pids, settings) and C(sysctl_files) with their keys.
          returned: when V(tuners) is gathered
          type: dict
"""

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.core import facts as engine


def run(module):
    netstack = engine.gather(module.params["gather_subset"], module.params["netns"])
    return {"changed": False, "ansible_facts": {"netstack": netstack}}


def main():
    module = NetstackModule(
        argument_spec=dict(
            gather_subset=dict(type="list", elements="str", default=["all"], choices=["all"] + list(engine.PROBES)),
            netns=dict(type="str"),
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
