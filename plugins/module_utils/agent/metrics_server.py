# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's metrics endpoint: GET /metrics (or /) answers the exposition text."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


def serve(listen, port, body):
    """Serve ``body()`` (exposition text) on listen:port from a daemon thread; returns the
    server (``shutdown()`` stops it), or None when ``port`` is 0."""
    if not port:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            data = body().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    class Server(HTTPServer):
        allow_reuse_address = True
        # HTTPServer is IPv4 only: an IPv6 listen address (::1) failed to bind
        address_family = socket.AF_INET6 if ":" in listen else socket.AF_INET

    server = Server((listen, port), Handler)
    t = threading.Thread(target=server.serve_forever, name="metrics")
    t.daemon = True
    t.start()
    return server
