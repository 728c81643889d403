# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of playbooks/site.yml and playbooks/report.yml (see module_utils/report/site.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible_collections.netstack.tuning.plugins.module_utils.report import site as sitereport


def site_host_summary(hostvars):
    """One host's status after site.yml, from its hostvars."""
    return sitereport.host_summary(hostvars)


def site_host_data(facts, journal=None, pins=None, agent_metrics=None):
    """What report.yml shows of one host: its netstack facts, journal entries, BPF pins."""
    return sitereport.host_data(facts, journal, pins, agent_metrics)


def site_report(hosts, reports=None, title="netstack.tuning fleet report"):
    """{host: site_host_data} and the capability reports -> one HTML page."""
    if not isinstance(hosts, dict):
        raise AnsibleFilterError("site_report: expects a dict of host name -> site_host_data")
    return sitereport.html(hosts, reports or {}, title)


def softirq_delta(after, before):
    """Per-CPU growth of /proc/softirqs' NET_RX and NET_TX lines between two readings."""
    return sitereport.softirq_delta(before, after)


class FilterModule(object):
    def filters(self):
        return {"site_host_summary": site_host_summary, "site_host_data": site_host_data, "site_report": site_report,
                "softirq_delta": softirq_delta}
