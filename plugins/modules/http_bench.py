#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: http_bench
short_description: Measure HTTP latency percentiles and throughput with nginx and wrk
version_added: 0.1.0
description:
  - Runs a real HTTP benchmark and returns the 50th, 90th, 99th and 99.9th latency
    percentiles, requests per second and errors, as the median over O(repeats) runs with
    their spread (min, max, interquartile range) and every run's raw numbers.
  - Percentiles come from wrk's own latency histogram (one counter per microsecond), read
    by a Lua C(done()) hook that the module writes to a temporary file; they are not
    derived from averages.
  - In V(lab) mode the module creates two network namespaces joined by a veth pair
    (server C(198.18.100.1/30), client C(198.18.100.2/30), in the 198.18.0.0/15
    benchmarking range), starts nginx in the server namespace with a private prefix under a
    temporary directory, drives it with wrk from the client namespace, and always removes
    the namespaces, nginx and the directory afterwards, also when something fails. Labs left
    behind by a killed run (their owner process is gone) are removed by the next run.
  - nginx serves a generated payload of O(payload_bytes) bytes directly (V(static)) or
    through a reverse proxy to a second server block on the server namespace's loopback
    (V(proxy)), with keep-alive upstream connections.
  - In V(fleet) mode wrk runs on this host against O(target_url) (a server elsewhere, for
    example another inventory host); no namespace or nginx is made.
  - A warm-up run of O(warmup) seconds precedes the measured runs and is discarded.
  - docs/http_bench.md in the collection describes each metric and wrk's caveats.
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  mode:
    description:
      - V(lab) builds a throwaway server/client namespace pair with nginx on this host.
      - V(fleet) runs wrk here against O(target_url).
    type: str
    choices: [lab, fleet]
    default: lab
  nginx_mode:
    description:
      - V(static) serves the payload from nginx directly.
      - V(proxy) puts an nginx reverse proxy in front of an upstream server block that
        serves the payload. Lab mode only.
    type: str
    choices: [static, proxy]
    default: static
  payload_bytes:
    description: Size of the response body in bytes (0 to 256 MiB). Lab mode only.
    type: int
    default: 1024
  connections:
    description: Concurrent HTTP keep-alive connections wrk keeps open; at least O(threads), at most 100000.
    type: int
    default: 16
  threads:
    description: wrk threads (1 to 256); the connections are split evenly among them.
    type: int
    default: 1
  duration:
    description: Seconds each measured run lasts (1 to 3600).
    type: int
    default: 10
  warmup:
    description: Seconds of a discarded warm-up run before the measured ones (0 to 3600); V(0) skips it.
    type: int
    default: 2
  repeats:
    description: Number of measured runs (1 to 100); medians and spreads are taken over them.
    type: int
    default: 3
  timeout:
    description:
      - wrk's per-request timeout in seconds (1 to 30). A response slower than this counts
        as a C(timeout) error and is not in the latency histogram.
      - Each wrk run is also bounded as a whole by O(duration) + O(timeout) + 30 seconds.
    type: int
    default: 2
  target_url:
    description: URL wrk requests in V(fleet) mode (C(http://) or C(https://)). Required there, refused in lab mode.
    type: str
  netns_prefix:
    description:
      - Prefix of the lab's namespace names, which are
        C(<prefix>-<pid>-<n>-srv) and C(<prefix>-<pid>-<n>-cli).
    type: str
    default: nsbench
  worker_processes:
    description:
      - nginx C(worker_processes), V(auto) or an integer from 1 to 1024 in ASCII digits. Lab mode only.
    type: str
    default: auto
  listen_backlog:
    description:
      - Accept queue nginx asks for (C(listen ... backlog=)); the kernel caps it at the
        server namespace's C(net.core.somaxconn). 511 is nginx's own default; 1 to 1048576.
        Lab mode only.
    type: int
    default: 511
  server_sysctls:
    description:
      - C(net.*) sysctls to set inside the server namespace before nginx starts (a trial of a
        tuning study). They live and die with the namespace, so nothing is journaled and the
        host is not touched; non-C(net.*) keys are refused because they are global.
      - Values follow M(netstack.tuning.sysctl_set)'s rules (ASCII integers of at most 20
        digits, strings, flat lists; no floats); a bad value fails before the lab starts.
      - Each value's shape is checked against the key's current value on this host (an integer
        key takes one integer, C(net.ipv4.tcp_rmem) three), and a key the host does not have
        is refused - before anything starts, in check mode too.
      - Lab mode only.
    type: dict
  keepalive:
    description:
      - V(true) keeps each wrk connection open across requests (HTTP keep-alive).
      - "V(false) sends C(Connection: close), so every request opens a new TCP connection
        (handshake, slow start and TIME_WAIT each time), as short-lived clients do."
    type: bool
    default: true
extends_documentation_fragment:
  - netstack.tuning.attributes
attributes:
  check_mode:
    support: full
    details: Check mode validates the options and looks for the tools, and runs no benchmark.
  diff_mode:
    support: none
notes:
  - The module changes no lasting state and always reports C(changed=false); what lab mode
    creates exists only while the module runs.
  - Lab mode needs root (network namespaces) and the C(nginx), C(wrk) and C(ip) (iproute2)
    commands; the module fails naming the missing tool. Fleet mode needs C(wrk) only.
  - Traffic in lab mode stays inside the namespaces the module creates.
  - wrk is a closed-loop load generator; see docs/http_bench.md on coordinated omission.
seealso:
  - module: netstack.tuning.sysctl_set
"""

EXAMPLES = r"""
- name: Latency of a 1 KiB static response, lab on this host
  netstack.tuning.http_bench:
    duration: 10
    connections: 16
    threads: 1
    repeats: 5
  register: bench

- name: Show the median p99 and its spread
  ansible.builtin.debug:
    msg: "p99 {{ bench.latency_us.p99 }} us (IQR {{ bench.spread.latency_us.p99.iqr }}), {{ bench.requests_per_sec }} req/s"

- name: Reverse-proxy mode with a sysctl trial inside the server namespace
  netstack.tuning.http_bench:
    nginx_mode: proxy
    payload_bytes: 16384
    server_sysctls:
      net.core.somaxconn: 4096
      net.ipv4.tcp_slow_start_after_idle: 0
    listen_backlog: 4096

- name: Drive a fleet server from its client host
  netstack.tuning.http_bench:
    mode: fleet
    target_url: "http://{{ hostvars['web1'].ansible_host }}/payload"
    duration: 30
    connections: 64
    threads: 2
"""

RETURN = r"""
latency_us:
  description:
    - Latency in microseconds, each the median over the repeats of wrk's per-run value
      (C(p50), C(p90), C(p99), C(p99_9), C(mean), C(stdev), C(max)).
  returned: success, not in check mode
  type: dict
  sample: {"p50": 181, "p90": 420, "p99": 1900, "p99_9": 3900, "mean": 250.4, "stdev": 310.2, "max": 4400}
requests_per_sec:
  description: Median over the repeats of completed requests divided by the run's duration.
  returned: success, not in check mode
  type: float
  sample: 34790.4
spread:
  description:
    - C(min), C(max) and C(iqr) (interquartile range, linear interpolation) over the
      repeats, under C(latency_us.<metric>) and C(requests_per_sec).
  returned: success, not in check mode
  type: dict
errors:
  description: wrk's error counts summed over the measured runs (C(connect), C(read), C(write), C(status), C(timeout), C(total)).
  returned: success, not in check mode
  type: dict
  sample: {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0, "total": 0}
error_ratio:
  description: Errors divided by requests plus errors, over the measured runs.
  returned: success, not in check mode
  type: float
requests:
  description: Requests completed over all measured runs.
  returned: success, not in check mode
  type: int
repeats:
  description: Number of measured runs.
  returned: success, not in check mode
  type: int
runs:
  description:
    - Every measured run as wrk reported it (C(repeat), C(requests), C(duration_s), C(bytes),
      C(requests_per_sec), C(latency_us) with C(min) too, C(errors), C(thread_requests_per_sec),
      C(threads), C(connections), C(duration)).
  returned: success, not in check mode
  type: list
  elements: dict
warmup:
  description: The discarded warm-up run (C(duration_s), C(requests), C(errors)), or null with O(warmup=0).
  returned: success, not in check mode
  type: dict
target_url:
  description: The URL wrk requested.
  returned: success, not in check mode
  type: str
  sample: http://198.18.100.1:80/payload
lab:
  description:
    - The lab that ran (C(server_netns), C(client_netns), C(server_addr), C(client_addr),
      C(nginx_mode), C(payload_bytes), C(worker_processes), C(listen_backlog),
      C(nginx_version), C(renderer), C(tmpdir), C(sysctls) as applied with before/after,
      C(reaped) leftovers of killed runs). All of it is gone when the module returns.
  returned: success in lab mode, not in check mode
  type: dict
params:
  description: The validated options the benchmark ran (or would run, in check mode) with.
  returned: always
  type: dict
"""

import signal

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import httpbench

OPTIONS = ("mode", "nginx_mode", "payload_bytes", "connections", "threads", "duration", "warmup", "repeats",
           "timeout", "target_url", "netns_prefix", "worker_processes", "listen_backlog", "server_sysctls",
           "keepalive")


def _terminate(signum, frame):
    # Turn SIGTERM (an Ansible timeout, a killed job) into an exception so the lab's
    # teardown runs.
    raise SystemExit("terminated by signal %d" % signum)


def run(module):
    params = {k: module.params[k] for k in OPTIONS}
    p = httpbench.validate(params)
    httpbench.check_server_sysctls(p["server_sysctls"])   # shapes against this host's values, check mode too
    tools = ["wrk"] if p["mode"] == "fleet" else ["wrk", "nginx", "ip"]
    for tool in tools:
        httpbench.require_tool(tool)
    shown = dict(p)
    if module.check_mode:
        return {"changed": False, "params": shown, "msg": "check mode: options are valid; no benchmark was run"}
    result = httpbench.benchmark(p)
    result["changed"] = False
    result["params"] = shown
    return result


def main():
    module = NetstackModule(
        argument_spec=dict(
            mode=dict(type="str", default="lab", choices=["lab", "fleet"]),
            nginx_mode=dict(type="str", default="static", choices=["static", "proxy"]),
            payload_bytes=dict(type="int", default=1024),
            connections=dict(type="int", default=16),
            threads=dict(type="int", default=1),
            duration=dict(type="int", default=10),
            warmup=dict(type="int", default=2),
            repeats=dict(type="int", default=3),
            timeout=dict(type="int", default=2),
            target_url=dict(type="str"),
            netns_prefix=dict(type="str", default="nsbench"),
            worker_processes=dict(type="str", default="auto"),
            listen_backlog=dict(type="int", default=511),
            server_sysctls=dict(type="dict"),
            keepalive=dict(type="bool", default=True),
        ),
        required_if=[("mode", "fleet", ["target_url"])],
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
