# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstack-agent's command line (the launcher the netstack_agent role installs calls main)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import signal
import sys
import time

from ansible_collections.netstack.tuning.plugins.module_utils.agent.config import load
from ansible_collections.netstack.tuning.plugins.module_utils.agent.control import (
    CONFD, CONFIG, PIDFILE, SUPERVISOR_PIDFILE, notify, read_pid, read_status, running)
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError


def parser():
    p = argparse.ArgumentParser(prog="netstack-agent", description="The netstack.tuning host agent.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(sp, positional=False):
        if positional:
            sp.add_argument("file", nargs="?", default=None, help="config file (default: --config)")
        sp.add_argument("--config", default=CONFIG, help="agent config (default %(default)s)")
        sp.add_argument("--confd", default=CONFD, help="capability sections, *.json (default %(default)s)")
        sp.add_argument("--no-confd", dest="confd", action="store_const", const=None, help="read no agent.d")
        return sp

    with_config(sub.add_parser("run", help="run in the foreground (systemd's ExecStart)"))
    sp = with_config(sub.add_parser("supervise", help="run under a restarting supervisor (hosts without systemd); "
                                                      "with a live supervisor already: reload it and exit"))
    sp.add_argument("--daemon", action="store_true", help="detach")
    with_config(sub.add_parser("check-config", help="validate FILE merged with --confd/*.json; exit 1 naming the field"),
                positional=True)
    sub.add_parser("reload", help="ask the running agent to reload its config (SIGHUP)")
    sub.add_parser("stop", help="stop the agent and its supervisor")
    sub.add_parser("status", help="print the running agent's status (exit 3 when not running)")
    return p


def main(argv=None, launcher=None):
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    try:
        o = p.parse_args(argv)
    except SystemExit as e:
        return e.code
    if not o.command:
        p.print_usage(sys.stderr)
        return 2
    try:
        return COMMANDS[o.command](o, launcher)
    except NetstackError as e:
        sys.stderr.write("netstack-agent: %s\n" % e)
        return 1


def _run(o, _launcher):
    from ansible_collections.netstack.tuning.plugins.module_utils.agent.daemon import Agent
    return Agent(o.config, o.confd).run()


def _check_config(o, _launcher):
    _cfg, sources, digest = load(o.file or o.config, o.confd)
    sys.stdout.write("ok %s (%s)\n" % (digest, ", ".join(sources) or "defaults"))
    return 0


def _supervise(o, launcher):
    from ansible_collections.netstack.tuning.plugins.module_utils.agent.supervisor import supervise
    pid = read_pid(SUPERVISOR_PIDFILE)
    if pid:
        os.kill(pid, signal.SIGHUP)
        sys.stdout.write("running (supervisor %d): reload requested\n" % pid)
        return 0
    load(o.config, o.confd)  # refuse to start on a bad config
    # The installed launcher is executable itself; a script run as `python x.py` is not.
    cmd = [launcher] if launcher else [sys.executable, os.path.abspath(sys.argv[0])]
    sys.stdout.write("started\n")
    sys.stdout.flush()
    run = cmd + ["run", "--config", o.config] + (["--confd", o.confd] if o.confd else ["--no-confd"])
    return supervise(run, daemon=o.daemon)


def _reload(_o, _launcher):
    pid = notify()
    sys.stdout.write("reload requested (pid %d)\n" % pid if pid else "not running\n")
    return 0 if pid else 1


def _stop(_o, _launcher):
    pids = [p for p in (read_pid(SUPERVISOR_PIDFILE), read_pid(PIDFILE)) if p]
    for p in pids:
        os.kill(p, signal.SIGTERM)
    deadline = time.time() + 10
    while time.time() < deadline and (read_pid(SUPERVISOR_PIDFILE) or read_pid(PIDFILE)):
        time.sleep(0.1)
    sys.stdout.write("stopped\n" if pids else "not running\n")
    return 0


def _status(_o, _launcher):
    st = read_status()
    pid = running()
    sys.stdout.write(json.dumps({"running": bool(pid), "pid": pid, "status": st}, indent=2, sort_keys=True) + "\n")
    return 0 if pid else 3


COMMANDS = {"run": _run, "check-config": _check_config, "supervise": _supervise, "reload": _reload,
            "stop": _stop, "status": _status}
