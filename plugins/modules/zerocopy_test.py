#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: zerocopy_test
short_description: Measure where MSG_ZEROCOPY and io_uring SEND_ZC pay, per path, protocol and message size
version_added: 0.1.0
description:
  - Runs sender/receiver pairs for every cell of O(paths) x O(protocols) x O(sizes) x
    O(modes), O(repeats) times with the modes interleaved, and reports per cell the
    throughput, the sender's and the receiver's CPU seconds per GB, zerocopy completions and
    notifications (completions per notification shows the kernel's coalescing), and the
    fraction of zerocopy sends the kernel copied anyway (C(SO_EE_CODE_ZEROCOPY_COPIED), or
    C(IORING_NOTIF_USAGE_ZC_COPIED) for io_uring).
  - Per path and protocol it reports the crossover size above which each zerocopy mode beats
    its copy baseline (MSG_ZEROCOPY and the lightweight notification against C(copy),
    io_uring SEND_ZC against io_uring SEND) and a recommendation.
  - Loopback and veth deliver to a local socket, where the kernel copies zerocopy pages
    before queueing them; the module reports that (copied fraction about 1, verdict
    C(copies-by-design)) rather than a win. A gain over a real NIC shows on O(paths=[peer]).
  - The sender and receiver are C(src/zc_bench.c) of the collection, shipped by the action
    plugin and compiled on the host into a temporary directory when a C compiler exists.
    Without one (or with O(implementation=python)) a Python implementation of the same
    protocol runs C(copy) and C(msg_zerocopy) only, and small-message figures then measure the
    interpreter; the result says which ran and why.
  - The lightweight notification (C(SCM_ZC_NOTIFICATION), mode V(zc_cmsg)) comes from an
    unmerged patch series; the module probes for it and reports V(unsupported) where the
    kernel rejects it.
  - Nothing on the host changes. The veth path makes two network namespaces (addresses in
    198.18.0.0/15) and removes them afterwards; namespaces left by a killed run are removed by
    the next one.
  - With O(serve=true) the module instead serves receivers for other hosts' V(peer) path on
    O(listen_address):O(peer_port) until O(serve_clients) clients said they are done, or
    O(serve_timeout); run it with C(async).
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  paths:
    description:
      - V(loopback), V(veth) (a veth pair between two namespaces this module creates) and
        V(peer) (to O(peer), which must run this module with O(serve=true)).
    type: list
    elements: str
    choices: [loopback, veth, peer]
    default: [loopback, veth]
  protocols:
    description: Transport protocols. UDP cells above 65507 bytes are reported V(n/a).
    type: list
    elements: str
    choices: [tcp, udp]
    default: [tcp, udp]
  sizes:
    description: Message sizes in bytes, or with a K or M suffix (C(4K), C(1M)); 1 byte to 16 MiB.
    type: list
    elements: raw
    default: [1K, 4K, 16K, 64K, 256K, 1M]
  modes:
    description:
      - V(copy) (send), V(io_uring) (IORING_OP_SEND), V(msg_zerocopy) (MSG_ZEROCOPY, error-queue
        completions), V(io_uring_zc) (IORING_OP_SEND_ZC), V(zc_cmsg) (MSG_ZEROCOPY with the
        SCM_ZC_NOTIFICATION control message).
    type: list
    elements: str
    choices: [copy, io_uring, msg_zerocopy, io_uring_zc, zc_cmsg]
    default: [copy, io_uring, msg_zerocopy, io_uring_zc, zc_cmsg]
  duration:
    description: Seconds each sender runs.
    type: float
    default: 1.0
  repeats:
    description: Runs per cell; figures are medians with min and max.
    type: int
    default: 3
  notification_batch:
    description: MSG_ZEROCOPY reads the error queue once this many sends are outstanding.
    type: int
    default: 32
  queue_depth:
    description: io_uring sends in flight.
    type: int
    default: 8
  sender_cpu:
    description: Pin the sender to this CPU.
    type: int
  receiver_cpu:
    description: Pin the receiver to this CPU (local paths).
    type: int
  peer:
    description: Address or name of the host serving the V(peer) path.
    type: str
  peer_port:
    description: TCP port of the peer's control connection (data ports are ephemeral); 1 to 65535.
    type: int
    default: 18391
  implementation:
    description: V(auto) compiles the C helper when a compiler exists, else uses Python; V(c) requires it.
    type: str
    choices: [auto, c, python]
    default: auto
  margin:
    description: A zerocopy mode "wins" at a size when its median throughput ratio is at least 1 + margin.
    type: float
    default: 0.05
  netns_prefix:
    description: Name prefix of the veth path's namespaces.
    type: str
    default: nszc
  receiver_timeout:
    description: Seconds a receiver waits for its sender.
    type: float
    default: 10.0
  serve:
    description: Serve receivers for other hosts' V(peer) path instead of measuring.
    type: bool
    default: false
  listen_address:
    description: Address to serve on with O(serve=true).
    type: str
  serve_clients:
    description: With O(serve=true), stop after this many clients said they are done (1 to 10000).
    type: int
    default: 1
  serve_timeout:
    description: With O(serve=true), stop after this many seconds in any case (1 to 604800, a week).
    type: float
    default: 600
  stop:
    description:
      - Tell the server on O(listen_address):O(peer_port) to stop now (cleanup after a failed
        measurement); succeeds also when none is running.
    type: bool
    default: false
  helper_source:
    description:
      - The text of C(zc_bench.c); set by the action plugin from the collection's C(src/).
    type: str
attributes:
  check_mode:
    description: Validates the options and reports the planned runs; nothing is run.
    support: full
  diff_mode:
    description: A measurement changes nothing, so there is no diff.
    support: none
notes:
  - Needs root for the veth path (network namespaces).
  - docs/zerocopy.md in the collection explains the modes, the figures and the crossover.
seealso:
  - name: MSG_ZEROCOPY (kernel documentation)
    description: Semantics, notifications, and why loopback copies.
    link: https://docs.kernel.org/networking/msg_zerocopy.html
"""

EXAMPLES = r"""
- name: Zero-copy table for loopback and a veth pair
  netstack.tuning.zerocopy_test:
    sizes: [4K, 64K, 1M]
    repeats: 3
  register: zc

- name: Serve receivers for a neighbour's peer path (in the background)
  netstack.tuning.zerocopy_test:
    serve: true
    listen_address: "{{ ansible_host }}"
  async: 900
  poll: 0

- name: Measure the real interface to that neighbour
  netstack.tuning.zerocopy_test:
    paths: [peer]
    peer: 198.18.0.12
    protocols: [tcp]
"""

RETURN = r"""
cells:
  description:
    - One entry per path, protocol, size and mode. C(status) is V(ok), V(unsupported) (with
      C(reason)) or V(n/a). Measured cells carry C(throughput_gbps), C(sender_cpu_s_per_gb),
      C(receiver_cpu_s_per_gb) (each C(median), C(min), C(max)), C(sends), C(completions),
      C(notifications), C(completions_per_notification), C(copied_fraction), C(enobufs),
      C(loss_fraction) (UDP) and C(per_run).
  returned: success, not in check mode
  type: list
  elements: dict
crossover:
  description:
    - Per path, protocol and zerocopy mode, its baseline, the smallest size from which it wins
      at every larger size by throughput (C(throughput_size)) and by sender CPU per GB
      (C(sender_cpu_size)), null when it never does, and the median ratio at each size.
  returned: success, not in check mode
  type: dict
recommendations:
  description: Per path and protocol, C(verdict) (V(zerocopy), V(copy), V(copies-by-design)) and C(text).
  returned: success, not in check mode
  type: dict
  sample: {"veth": {"tcp": {"verdict": "copies-by-design", "text": "keep copies on veth: ..."}}}
kernel:
  description: The probe (C(so_zerocopy), C(io_uring), C(io_uring_send_zc), C(zc_cmsg) and the kernel C(release)).
  returned: success, not in check mode
  type: dict
implementation:
  description: Which sender/receiver ran (C(kind) V(c) or V(python)), the compiler, and why.
  returned: success, not in check mode
  type: dict
notes:
  description: Caveats that apply to these figures (loopback copies, the Python fallback).
  returned: success, not in check mode
  type: list
  elements: str
params:
  description: The validated options.
  returned: success
  type: dict
served:
  description: With O(serve=true), how many receivers were served.
  returned: with serve
  type: int
stopped:
  description: With O(serve=true), whether a stop request ended serving; with O(stop=true), whether a server answered.
  returned: with serve or stop
  type: bool
"""

import signal

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.zerocopy import measure as zerocopy

OPTIONS = tuple(zerocopy.DEFAULTS)
SERVE_OPTIONS = ("listen_address", "peer_port", "serve_clients", "serve_timeout", "implementation")


def _terminate(signum, frame):
    # An Ansible timeout or a killed job: raise so that namespaces and helpers are removed.
    raise SystemExit("terminated by signal %d" % signum)


def run(module):
    """Every option is checked on every path (serve, stop, measure) before anything starts,
    in check mode as in real mode: the serve options, and the measurement options too (a
    bad value is refused even where that path does not use it)."""
    source = module.params["helper_source"]
    if module.params["stop"] and module.params["serve"]:
        raise NetstackError("serve and stop exclude each other", field="stop")
    action = "stop" if module.params["stop"] else "serve" if module.params["serve"] else "run"
    serving = zerocopy.validate_serve({k: module.params[k] for k in SERVE_OPTIONS}, action)
    p = zerocopy.validate({k: module.params[k] for k in OPTIONS}, measure=action == "run")
    if action == "stop":
        params = {k: serving[k] for k in ("listen_address", "peer_port")}
        if module.check_mode:
            return {"changed": False, "params": params, "msg": "check mode: would ask the server to stop"}
        return zerocopy.stop_serving(params)
    if action == "serve":
        params = {k: serving[k] for k in SERVE_OPTIONS}
        if module.check_mode:
            return {"changed": False, "params": params, "msg": "check mode: would serve receivers"}
        result = zerocopy.serve_peer(params, source)
        result["params"] = params
        return result
    if module.check_mode:
        cells = len(p["paths"]) * len(p["protocols"]) * len(p["sizes"]) * len(p["modes"])
        return {"changed": False, "params": p, "cells_planned": cells,
                "msg": "check mode: options are valid; %d cells x %d repeats would run, about %.0f s"
                       % (cells, p["repeats"], cells * p["repeats"] * (p["duration"] + 0.05))}
    return zerocopy.zerocopy_test(p, source)


def main():
    module = NetstackModule(
        argument_spec=dict(
            paths=dict(type="list", elements="str", default=["loopback", "veth"], choices=list(zerocopy.PATHS)),
            protocols=dict(type="list", elements="str", default=["tcp", "udp"], choices=list(zerocopy.PROTOCOLS)),
            sizes=dict(type="list", elements="raw", default=["1K", "4K", "16K", "64K", "256K", "1M"]),
            modes=dict(type="list", elements="str", default=list(zerocopy.MODES), choices=list(zerocopy.MODES)),
            duration=dict(type="float", default=1.0),
            repeats=dict(type="int", default=3),
            notification_batch=dict(type="int", default=32),
            queue_depth=dict(type="int", default=8),
            sender_cpu=dict(type="int"),
            receiver_cpu=dict(type="int"),
            peer=dict(type="str"),
            peer_port=dict(type="int", default=18391),
            implementation=dict(type="str", default="auto", choices=["auto", "c", "python"]),
            margin=dict(type="float", default=0.05),
            netns_prefix=dict(type="str", default="nszc"),
            receiver_timeout=dict(type="float", default=10.0),
            serve=dict(type="bool", default=False),
            listen_address=dict(type="str"),
            serve_clients=dict(type="int", default=1),
            serve_timeout=dict(type="float", default=600),
            stop=dict(type="bool", default=False),
            helper_source=dict(type="str", no_log=True),
        ),
        required_if=[("serve", True, ["listen_address"]), ("stop", True, ["listen_address"])],
        supports_check_mode=True,
    )
    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run(module)
    except NetstackError as e:
        module.fail_json(**e.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
