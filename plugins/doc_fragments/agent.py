# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Modules that keep a section of netstack-agent's configuration (see the module's
    # RV(config_file)) and tell a running agent about a change.
    DOCUMENTATION = r"""
options:
  config_dir:
    description:
      - The netstack-agent's drop-in config directory (an absolute path); the module keeps
        its own section of the agent's config there, one JSON file.
    type: path
    default: /etc/netstack/agent.d
  notify_agent:
    description: Send SIGHUP to a running netstack-agent when its section of the config changed.
    type: bool
    default: true
"""
