# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's controllers, by config section.

A controller is a class with ``section``, ``schema()`` (the JSON Schema of its section),
``check(section, cfg)`` (checks a schema cannot say; NetstackError naming the field),
``reconcile(cfg, why)`` and ``metrics(cfg)``, and optionally ``close()``.  Each lives in its
capability's package and is imported by name, only when a config holds its section: the
agent imports no capability it does not run, and a module that writes one section (which
ships agent/control.py) carries none of the others.  ``journal`` has no section: it always
runs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib

BASE = "ansible_collections.netstack.tuning.plugins.module_utils."

# section -> "package.module:Class", in reconcile order
CONTROLLERS = (
    ("journal", "agent.journal_watch:JournalController"),
    ("shm", "shm_path.controller:ShmController"),
    ("amp", "amp.controller:AmpController"),
    ("traffic", "traffic.controller:TrafficController"),
)
ALWAYS = ("journal",)


def names():
    """The config sections controllers handle (``journal`` runs without one)."""
    return [name for name, _where in CONTROLLERS if name not in ALWAYS]


def known(section):
    return section in names()


def controller(section):
    """The controller class of ``section`` (its module imported now)."""
    where = dict(CONTROLLERS)[section]
    module, cls = where.split(":")
    return getattr(importlib.import_module(BASE + module), cls)


def wanted(cfg):
    """The sections to run for ``cfg``, in reconcile order."""
    return [name for name, _where in CONTROLLERS if name in ALWAYS or name in cfg]
