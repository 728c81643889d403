#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: bpf_program
short_description: Compile, load, attach and pin an eBPF program with bcc, idempotently
version_added: 0.1.0
description:
  - Compiles a BPF C source with bcc, loads one or more of its functions, attaches each
    (cgroup C(sock_ops), cgroup C(sock_addr) hooks, C(sk_msg) verdict on a sockmap/sockhash,
    C(tc) clsact ingress/egress) and pins programs and maps under
    C(/sys/fs/bpf/netstack/<name>/progs/) and C(/sys/fs/bpf/netstack/<name>/maps/).
  - The source is a file of the collection's C(bpf/) directory, shipped from the controller
    by the action plugin of the same name, or a file on the managed host with O(remote_src).
  - Idempotent. The same source already attached changes nothing (checked against the
    kernel, not only the record); a source whose compiled programs have the same tags
    changes nothing either. A changed source is loaded next to the old one, map contents
    of the same name and shape are carried over, and every attachment is swapped
    atomically (C(BPF_F_REPLACE) on cgroups, a tc filter replace over netlink), so no connection sees
    a moment without a program.
  - Compile errors and verifier rejections fail the task with the relevant log lines in
    RV(log); nothing new is left attached or pinned, and a previous version stays in place.
  - What was made is recorded in O(state_dir)C(/bpf/<name>.json) and every action in
    C(events.jsonl) next to it; O(state=absent) detaches and unpins exactly that.
  - Mounts the BPF filesystem at C(/sys/fs/bpf) if it is not mounted (and says so);
    O(state=absent) unmounts it again when netstack mounted it and nothing else is pinned.
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  name:
    description: Name of the program set; the pin directory is C(/sys/fs/bpf/netstack/<name>).
    type: str
    required: true
  src:
    description:
      - File name of a source in the collection's C(bpf/) directory (for example
        C(tcp_tuning.bpf.c)) or a path on the controller; read by the action plugin.
      - With O(remote_src=true), an absolute path on the managed host.
      - O(state=present) needs O(src) or O(source_text).
    type: str
  remote_src:
    description: O(src) is a path on the managed host.
    type: bool
    default: false
  source_text:
    description:
      - The C source itself. Set by the action plugin from O(src); may be given directly.
    type: str
  cflags:
    description: Extra compiler flags for bcc (for example C(-DMAX_RULES=16)).
    type: list
    elements: str
    default: []
  programs:
    description: Functions of the source to load and where to attach each.
    type: list
    elements: dict
    suboptions:
      function:
        description: C function name.
        type: str
        required: true
      type:
        description: Program type.
        type: str
        required: true
        choices: [sock_ops, sock_addr, sk_msg, sched_cls]
      cgroup:
        description:
          - cgroup v2 directory for C(sock_ops) and C(sock_addr), absolute or relative to
            the v2 root (C(/sys/fs/cgroup/unified) on hybrid hosts). Attached with
            C(BPF_F_ALLOW_MULTI), so other programs on the cgroup keep running.
        type: str
      attach_type:
        description: Hook of a C(sock_addr) program.
        type: str
        choices: [bind4, bind6, connect4, connect6, sendmsg4, sendmsg6, recvmsg4, recvmsg6,
                  getpeername4, getpeername6, getsockname4, getsockname6]
      map:
        description:
          - For C(sk_msg), the sockmap or sockhash to attach to, by its name in this source
            or as an absolute pinned path.
        type: str
      interface:
        description: For C(sched_cls), the network interface (a clsact qdisc is added if missing).
        type: str
      direction:
        description: For C(sched_cls), the clsact hook.
        type: str
        choices: [ingress, egress]
        default: ingress
      netns:
        description: For C(sched_cls), the named network namespace of O(programs[].interface).
        type: str
      priority:
        description: For C(sched_cls), the filter preference (C(tc ... pref)).
        type: int
        default: 1
  state:
    description: V(present) installs, V(absent) detaches and unpins everything this module made for O(name).
    type: str
    choices: [present, absent]
    default: present
  migrate_maps:
    description: When replacing, copy the entries of hash/array maps of the same name and shape into the new maps.
    type: bool
    default: true
extends_documentation_fragment:
  - netstack.tuning.attributes
  - netstack.tuning.state_dir
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Runs on the managed host as root with the distribution's Python, which must import bcc
    (role C(netstack.tuning.bcc_runtime)).
  - Programs should use only UAPI context structures so that they compile against any
    recent kernel headers.
seealso:
  - module: netstack.tuning.tcp_policy
"""

EXAMPLES = r"""
- name: Per-connection TCP tuning on a cgroup
  netstack.tuning.bpf_program:
    name: tcp_tuner
    src: tcp_tuning.bpf.c
    programs:
      - function: tcp_tuner
        type: sock_ops
        cgroup: /sys/fs/cgroup/unified/web

- name: A tc ingress program on a veth inside a lab namespace
  netstack.tuning.bpf_program:
    name: lab_drop
    src: /srv/bpf/drop.c
    programs:
      - function: drop
        type: sched_cls
        interface: veth1
        direction: ingress
        netns: lab1

- name: Remove it again
  netstack.tuning.bpf_program:
    name: tcp_tuner
    state: absent
"""

RETURN = r"""
action:
  description: What was done, V(none), V(create), V(replace) or V(remove).
  returned: always
  type: str
programs:
  description: The programs in place (function, type, pin, id, tag, pinned, attached).
  returned: state is present
  type: list
  elements: dict
maps:
  description: The pinned maps (name, pin, id, type, key_size, value_size, max_entries).
  returned: state is present
  type: list
  elements: dict
pin_dir:
  description: Directory of the pins.
  returned: state is present
  type: str
  sample: /sys/fs/bpf/netstack/tcp_tuner
removed:
  description: What O(state=absent) detached, unpinned or unmounted.
  returned: state is absent
  type: list
  elements: str
notes:
  description: Things worth knowing (bpffs mounted, maps carried over, ...).
  returned: always
  type: list
  elements: str
log:
  description: Compiler or verifier log lines, on failure.
  returned: failure
  type: list
  elements: str
stage:
  description: Where a failure happened, V(compile) or V(verifier).
  returned: failure
  type: str
"""

import os

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path, check_path_options
from ansible_collections.netstack.tuning.plugins.module_utils.bpf import program as bpf_engine


def _text(summary):
    if not summary:
        return ""
    lines = ["digest %s\n" % summary.get("digest")]
    lines += ["%s\n" % p for p in summary.get("programs", [])]
    return "".join(lines)


def check_paths(p):
    """NUL bytes and control characters in path options: an error naming the option."""
    check_path_options(p, ["state_dir"])
    check_path_options(p, ["src"], absolute=False)
    for i, prog in enumerate(p["programs"] or []):
        for key in ("cgroup", "map"):
            if isinstance(prog, dict) and prog.get(key) is not None:
                check_path(prog[key], "programs[%d].%s" % (i, key), absolute=False)


def run(module):
    p = module.params
    check_paths(p)
    engine = bpf_engine.Engine(p["state_dir"])
    if p["state"] == "absent":
        res = engine.absent(p["name"], check_mode=module.check_mode)
    else:
        source = p["source_text"]
        origin = "inline"
        if source is None:
            if not p["remote_src"]:
                raise NetstackError("src must be shipped by the action plugin (or set remote_src=true for a "
                                    "path on the host)", field="src")
            if not os.path.isabs(p["src"]):
                raise NetstackError("with remote_src=true, src must be an absolute path", field="src")
            try:
                with open(p["src"]) as f:
                    source = f.read()
            except (IOError, OSError) as e:
                raise NetstackError("cannot read %s: %s" % (p["src"], e.strerror or e), field="src")
            origin = p["src"]
        elif p["src"]:
            origin = p["src"]
        res = engine.present(p["name"], source, p["programs"] or [], cflags=p["cflags"], origin=origin,
                             check_mode=module.check_mode, migrate_maps=p["migrate_maps"])
    result = dict(res)
    before, after = result.pop("before", None), result.pop("after", None)
    if module._diff:
        result["diff"] = {"before_header": "bpf %s" % p["name"], "after_header": "bpf %s" % p["name"],
                          "before": _text(before), "after": _text(after)}
    return result


def main():
    module = NetstackModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            src=dict(type="str"),
            remote_src=dict(type="bool", default=False),
            source_text=dict(type="str"),
            cflags=dict(type="list", elements="str", default=[]),
            programs=dict(type="list", elements="dict", options=dict(
                function=dict(type="str", required=True),
                type=dict(type="str", required=True, choices=["sock_ops", "sock_addr", "sk_msg", "sched_cls"]),
                cgroup=dict(type="str"),
                attach_type=dict(type="str", choices=["bind4", "bind6", "connect4", "connect6", "sendmsg4",
                                                      "sendmsg6", "recvmsg4", "recvmsg6", "getpeername4",
                                                      "getpeername6", "getsockname4", "getsockname6"]),
                map=dict(type="str"),
                interface=dict(type="str"),
                direction=dict(type="str", default="ingress", choices=["ingress", "egress"]),
                netns=dict(type="str"),
                priority=dict(type="int", default=1),
            )),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            migrate_maps=dict(type="bool", default=True),
            state_dir=dict(type="path", default="/var/lib/netstack"),
        ),
        required_if=[("state", "present", ("programs",)), ("state", "present", ("src", "source_text"), True)],
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except NetstackError as e:
        module.fail_json(**e.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
