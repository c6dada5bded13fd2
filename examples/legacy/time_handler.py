#! /usr/bin/env python3
"""The classic first python-scgi application: every page shows the time.

Written for python-scgi's ``scgi.scgi_server``; only the import lines and
the module prefix differ (``scgi.`` became ``scgiwsgi.``).  Like the
original it writes no ``Status:`` line; scgiwsgi adds ``Status: 200 OK``.

Run it with ``python examples/legacy/time_handler.py`` (port 4000, or the
socket systemd passes in) and point the front end at it.
"""

import time

import scgiwsgi
import scgiwsgi.scgi_server


class TimeHandler(scgiwsgi.scgi_server.SCGIHandler):
    def produce(self, env, bodysize, input, output):
        output.write("Content-Type: text/plain\r\n")
        output.write("\r\n")
        output.write(f"The time is {time.ctime()}\n")


# Listen on port 4000; the server makes TimeHandler objects as it needs them.
server = scgiwsgi.scgi_server.SCGIServer(handler_class=TimeHandler, port=4000)

# Serve requests until stopped.
server.serve()
