# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The background thread an agent controller runs beside the daemon's loop (AMP's sampler,
the traffic collector's scraper): started once, asked to stop through an Event, joined."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading


class Worker(object):
    """One named daemon thread running ``target(*args, stop_event=<Event>, **kwargs)``.

    ``start`` does nothing while the thread is alive; ``stop`` sets the event and waits up to
    ``join_timeout`` seconds (a thread still inside a slow scrape is left to finish on its own:
    it is a daemon thread and checks the event before its next round)."""

    def __init__(self, name, join_timeout):
        self.name = name
        self.join_timeout = join_timeout
        self.stop_event = threading.Event()
        self.thread = None

    def alive(self):
        return self.thread is not None and self.thread.is_alive()

    def start(self, target, *args, **kwargs):
        if self.alive():
            return False
        self.stop_event.clear()
        kwargs["stop_event"] = self.stop_event
        self.thread = threading.Thread(target=target, name=self.name, args=args, kwargs=kwargs)
        self.thread.daemon = True
        self.thread.start()
        return True

    def stop(self):
        if self.thread is not None:
            self.stop_event.set()
            self.thread.join(self.join_timeout)
            self.thread = None
