# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""netstack-agent's supervisor for hosts whose PID 1 is not systemd: runs the agent and
restarts it when it exits (backoff 1 s doubling to 30 s, reset after a minute of uptime),
forwarding SIGHUP and SIGTERM."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import signal
import sys
import time

from ansible_collections.netstack.tuning.plugins.module_utils.agent.control import LOG_DIR, SUPERVISOR_PIDFILE, _write_pid, read_pid


def supervise(argv, pidfile=SUPERVISOR_PIDFILE, daemon=False, sleep=time.sleep):
    """Run the agent (``argv``, a command list) and restart it whenever it exits, until
    SIGTERM.  Backoff 1 s, doubling to 30 s; back to 1 s after 60 s of uptime."""
    if daemon:
        if os.fork():
            return 0
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        if not os.path.isdir(LOG_DIR):
            os.makedirs(LOG_DIR, 0o755)
        log = os.open(os.path.join(LOG_DIR, "agent-supervisor.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
    _write_pid(pidfile)
    state = {"child": None, "stop": False}

    def forward(signum, _frame):
        if signum in (signal.SIGTERM, signal.SIGINT):
            state["stop"] = True
        if state["child"]:
            try:
                os.kill(state["child"], signal.SIGTERM if signum == signal.SIGINT else signum)
            except OSError:
                pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    backoff = 1.0
    try:
        while not state["stop"]:
            started = time.time()
            pid = os.fork()
            if pid == 0:
                try:
                    os.execv(argv[0], argv)
                finally:
                    os._exit(127)
            state["child"] = pid
            while True:
                try:
                    status = os.waitpid(pid, 0)[1]
                    break
                except OSError as e:
                    if e.errno != errno.EINTR:
                        raise
            state["child"] = None
            if state["stop"]:
                break
            if time.time() - started > 60:
                backoff = 1.0
            sys.stderr.write(json.dumps({"ts": time.time(), "controller": "supervisor",
                                         "what": "agent exited (status %d); restart in %.0f s" % (status, backoff),
                                         "why": "supervised"}) + "\n")
            sys.stderr.flush()
            sleep(backoff)
            backoff = min(backoff * 2, 30.0)
    finally:
        if read_pid(pidfile) == os.getpid():
            os.unlink(pidfile)
    return 0
