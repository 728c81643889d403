# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What modules need of netstack-agent: where its config lives, writing one section of it
(``agent.d/<section>.json``), and asking a running agent to reload.  Small on purpose: a
module that hands a section to the agent ships this file, not the agent."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import signal

CONFIG = "/etc/netstack/agent.json"
CONFD = "/etc/netstack/agent.d"
RUN_DIR = "/run/netstack"
PIDFILE = os.path.join(RUN_DIR, "agent.pid")
SUPERVISOR_PIDFILE = os.path.join(RUN_DIR, "agent-supervisor.pid")
STATUS = os.path.join(RUN_DIR, "agent-status.json")
LOG_DIR = "/var/log/netstack"


def write_section(confd, name, section, check_mode=False):
    """Write ``confd/<name>.json`` holding {name: section} (None: remove the file).  Returns
    True when the file changed."""
    path = os.path.join(confd, "%s.json" % name)
    text = None if section is None else json.dumps({name: section}, indent=2, sort_keys=True) + "\n"
    try:
        with open(path) as f:
            old = f.read()
    except (IOError, OSError):
        old = None
    if old == text:
        return False
    if check_mode:
        return True
    if text is None:
        os.unlink(path)
        return True
    if not os.path.isdir(confd):
        os.makedirs(confd, 0o755)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)
    return True


# ------------------------------------------------------------------ pid files

def read_pid(path):
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
    except (IOError, OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except OSError as e:
        if e.errno == errno.ESRCH:
            return None
    return pid


def _write_pid(path):
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d, 0o755)
    tmp = "%s.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(tmp, path)


def running(pidfile=PIDFILE):
    """PID of a live agent, or None."""
    return read_pid(pidfile)


def notify(pidfile=PIDFILE):
    """Ask a running agent to reload its config (SIGHUP).  Returns its PID or None."""
    pid = read_pid(pidfile)
    if pid:
        os.kill(pid, signal.SIGHUP)
    return pid


def read_status(path=STATUS):
    try:
        with open(path) as f:
            return json.load(f)
    except (IOError, OSError, ValueError):
        return None
