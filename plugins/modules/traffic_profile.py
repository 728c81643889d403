#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: traffic_profile
short_description: Traffic insight - collect traffic with eBPF, analyse it (profile, anomalies, 95th percentile, projection)
version_added: 0.1.0
description:
  - O(action=collect) attaches the tc clsact program C(bpf/traffic.bpf.c) on ingress and
    egress of O(interfaces). It counts bytes and packets per direction, remote prefix
    (O(prefix_v4) / O(prefix_v6) bits), IP protocol, port class and DSCP in a per-CPU map.
    Scrapes turn the counters into rows of an on-host time-series store (O(store), one CSV file
    per UTC day, pruned after O(retention_days)).
  - With O(mode=oneshot) the module scrapes every O(interval) seconds for O(duration) seconds
    and then removes the program (unless O(keep)), so a run leaves the host as it found it
    except for the store. With O(mode=agent) it writes the netstack-agent's C(traffic.json)
    section and leaves the program attached; the agent keeps it attached and scrapes at
    O(interval) (role C(netstack.tuning.netstack_agent)).
  - O(state=absent) with O(action=collect) removes the program and the agent section; the
    store stays (delete it with M(ansible.builtin.file)).
  - O(action=analyze) reads O(sources) (store directories, native or generic CSV flow logs,
    NetFlow v5/v9 and IPFIX exports as raw streams or pcap files), and runs the analyzer -
    seasonal profile, percentiles, 95th-percentile billing, seasonality-aware anomaly
    detection with top contributors, water levels against the C(capacity) analysis option, capacity and
    cost projection with intervals - on this host. It needs numpy (C(python3-numpy)); the
    role runs it on the controller. Results go to O(output) (JSON) and O(report) (HTML with
    plots); the return value carries the summary.
  - Bad input files fail with the file, line (or packet and offset) and field named;
    nothing is written.
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  action:
    description: What to do.
    type: str
    choices: [collect, analyze]
    required: true
  state:
    description: With O(action=collect), whether the collector is on.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description: With O(action=collect) and O(state=present), who scrapes.
    type: str
    choices: [oneshot, agent]
    default: oneshot
  interfaces:
    description: Interfaces to count on (both directions). Required to collect.
    type: list
    elements: str
  netns:
    description: Named network namespace of O(interfaces) (C(ip netns) name); null for this one.
    type: str
  prefix_v4:
    description: Remote IPv4 addresses are counted per prefix of this length.
    type: int
    default: 24
  prefix_v6:
    description: Remote IPv6 addresses are counted per prefix of this length.
    type: int
    default: 48
  max_flows:
    description: Size of the per-CPU counter map (keys); traffic of keys that do not fit is counted as overflow.
    type: int
    default: 16384
  duration:
    description: With O(mode=oneshot), seconds to collect.
    type: int
    default: 60
  interval:
    description: Seconds between scrapes.
    type: int
    default: 10
  keep:
    description: With O(mode=oneshot), leave the program attached after the run.
    type: bool
    default: false
  store:
    description: The store directory. Default C(<state_dir>/traffic/store).
    type: path
  retention_days:
    description: Store files older than this many days are deleted at each scrape.
    type: int
    default: 14
  link_prefix:
    description: Link names in the store are C(<link_prefix>:<interface>). Default the host name.
    type: str
  name:
    description: Name of the BPF program set (pins under C(/sys/fs/bpf/netstack/<name>)).
    type: str
    default: traffic
  sources:
    description:
      - With O(action=analyze), files, directories (every C(*.csv) in them) or glob patterns; required there.
    type: list
    elements: path
  format:
    description: Format of O(sources); C(auto) tells CSV from NetFlow/IPFIX by content.
    type: str
    choices: [auto, csv, netflow]
    default: auto
  local_prefixes:
    description:
      - With O(action=analyze), this site's address prefixes; they decide the direction and
        the remote side of flows in generic CSV and NetFlow/IPFIX files.
    type: list
    elements: str
    default: []
  analysis:
    description:
      - Analyzer options - C(step) (s), C(percentiles), C(capacity) (link -> bits/s),
        C(warn)/C(critical) (fractions of capacity), C(price_per_mbps) (per month, on the
        billable 95th percentile), C(horizon_days), C(holidays) (C(YYYY-MM-DD) local days
        that behave like a Sunday, every link), C(link_holidays) (link -> such days),
        C(timezone) (the IANA zone day shapes are built in, default C(UTC)), C(timezones)
        (link -> its own zone), C(spike_sigma), C(spike_min), C(spike_min_sustained),
        C(spike_sustained) (s), C(outage_min), C(shift_min), C(drift_min),
        C(new_prefix_share), C(warmup_days), C(top_k). See docs/traffic.md.
      - Numbers must be finite and within the bounds docs/traffic.md gives; C(holidays) and
        C(percentiles) are lists. A bad value fails naming C(analysis.<key>) before anything
        is read.
    type: dict
    default: {}
  output:
    description:
      - With O(action=analyze), write the full result (JSON) here.
      - A file in an existing, writable directory, not under C(/proc), C(/sys) or C(/dev);
        checked before anything is read, in check mode too.
    type: path
  report:
    description:
      - With O(action=analyze), write the HTML report here (the same rules as O(output), and
        another file).
    type: path
  title:
    description: Title of the HTML report.
    type: str
    default: netstack.tuning traffic insight
  hosts:
    description: Per-host notes shown at the top of the report (the role fills it).
    type: dict
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
  async:
    description: Supports being used with the C(async) keyword.
    support: full
notes:
  - Collecting needs bcc and pyroute2 on the host (role C(netstack.tuning.bcc_runtime) installs both).
  - Bytes are L3 bytes (IP header and payload); a GSO super-packet counts as its segments.
  - The role C(netstack.tuning.traffic_insight) runs both actions across a fleet and writes one report.
seealso:
  - module: netstack.tuning.bpf_program
"""

EXAMPLES = r"""
- name: Count a minute of eth0's traffic into the store, then detach
  netstack.tuning.traffic_profile:
    action: collect
    interfaces: [eth0]
    duration: 60
    interval: 10

- name: Keep collecting under netstack-agent
  netstack.tuning.traffic_profile:
    action: collect
    mode: agent
    interfaces: [eth0, eth1]
    prefix_v4: 24
    prefix_v6: 48
    interval: 60
    retention_days: 35

- name: Analyse the store and a NetFlow export on the controller
  netstack.tuning.traffic_profile:
    action: analyze
    sources:
      - /var/lib/netstack/traffic/store
      - /srv/flows/border-router.pcap
    local_prefixes: [198.51.100.0/24, 2001:db8::/32]
    analysis:
      capacity: {"edge1:eth0": 10000000000}
      price_per_mbps: 0.35
      holidays: ["2026-12-25"]
    output: /tmp/traffic.json
    report: /tmp/traffic.html
  delegate_to: localhost
"""

RETURN = r"""
collector:
  description: With O(action=collect) - the program state (C(changed), C(programs), C(maps), C(notes)).
  returned: when action is collect
  type: dict
scrapes:
  description: Number of scrapes done by this task and rows written to the store.
  returned: when action is collect
  type: dict
store:
  description: The store - C(path), C(files), C(rows), C(bytes_on_disk), C(first), C(last).
  returned: when action is collect
  type: dict
records:
  description: With O(action=analyze), records read.
  returned: when action is analyze
  type: int
span:
  description: First and last second analysed (UNIX time) and the bin width.
  returned: when action is analyze
  type: dict
anomalies:
  description:
    - Each with C(kind) (spike, dip, level_shift, drift, new_prefix), C(link),
      C(directions), C(start), C(end), C(score), C(magnitude) and C(top_contributors)
      (dimension, value, bytes, expected_bytes, delta_bytes, share_of_change).
  returned: when action is analyze
  type: list
billing:
  description: 95th percentile per link and month (in, out, billable, cost with a price).
  returned: when action is analyze
  type: list
water_levels:
  description: Utilisation against capacity and the projected dates it crosses warn and critical.
  returned: when action is analyze
  type: list
projection:
  description: Growth per year with interval and the projected daily 95th percentile in 30 and 90 days.
  returned: when action is analyze
  type: list
records_per_second:
  description: Analyzer throughput of this run.
  returned: when action is analyze
  type: int
end_to_end_records_per_second:
  description: Throughput of this run with reading the sources included (C(end_to_end_seconds) in all).
  returned: when action is analyze and there were records
  type: int
"""

from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import NetstackModule
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path_options
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import profile as traffic


def run(module):
    p = module.params
    check_path_options(p, ["state_dir", "config_dir"])
    check_path_options(p, ["store", "sources", "output", "report"], absolute=False)
    if p["action"] == "collect":
        result = traffic.collect(p, check_mode=module.check_mode)
    else:
        result = traffic.analyze_files(p, check_mode=module.check_mode)
    if not module._diff:
        result.pop("diff", None)
    return result


def main():
    module = NetstackModule(
        argument_spec=dict(
            action=dict(type="str", required=True, choices=["collect", "analyze"]),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            mode=dict(type="str", default="oneshot", choices=["oneshot", "agent"]),
            interfaces=dict(type="list", elements="str"),
            netns=dict(type="str"),
            prefix_v4=dict(type="int", default=24),
            prefix_v6=dict(type="int", default=48),
            max_flows=dict(type="int", default=16384),
            duration=dict(type="int", default=60),
            interval=dict(type="int", default=10),
            keep=dict(type="bool", default=False),
            store=dict(type="path"),
            retention_days=dict(type="int", default=14),
            link_prefix=dict(type="str"),
            name=dict(type="str", default="traffic"),
            state_dir=dict(type="path", default="/var/lib/netstack"),
            config_dir=dict(type="path", default="/etc/netstack/agent.d"),
            notify_agent=dict(type="bool", default=True),
            sources=dict(type="list", elements="path"),
            format=dict(type="str", default="auto", choices=["auto", "csv", "netflow"]),
            local_prefixes=dict(type="list", elements="str", default=[]),
            analysis=dict(type="dict", default={}),
            output=dict(type="path"),
            report=dict(type="path"),
            title=dict(type="str", default="netstack.tuning traffic insight"),
            hosts=dict(type="dict"),
            source_text=dict(type="str", no_log=False),
        ),
        required_if=[("action", "analyze", ("sources",))],
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except NetstackError as e:
        module.fail_json(**e.as_dict())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
