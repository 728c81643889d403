# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that render zerocopy_test results (see module_utils/zerocopy/report.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError
from ansible_collections.netstack.tuning.plugins.module_utils.zerocopy import report as zcreport


def _reports(value):
    if not isinstance(value, dict):
        raise AnsibleFilterError("zerocopy_report: expects a dict of host name -> zerocopy_test result")
    return value


def zerocopy_report(value, title="netstack.tuning zero-copy check"):
    """{host: zerocopy_test result} -> one HTML page."""
    return zcreport.html(_reports(value), title)


def zerocopy_markdown(value):
    """{host: zerocopy_test result} -> Markdown tables, one section per host."""
    return "\n".join(zcreport.markdown(r, h) for h, r in sorted(_reports(value).items()) if r and "cells" in r)


class FilterModule(object):
    def filters(self):
        return {"zerocopy_report": zerocopy_report, "zerocopy_markdown": zerocopy_markdown}
