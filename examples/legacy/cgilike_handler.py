#! /usr/bin/env python3
"""A python-scgi handler written CGI style: ``os.environ`` in, ``print()`` out.

``produce_cgilike()`` reads the request body from ``sys.stdin`` and prints
the page to ``sys.stdout``, like a CGI script.  python-scgi swapped those
globals for the whole process; scgiwsgi redirects them per thread, so
concurrent requests never see each other's variables or output.
"""

import os
import sys
import time

import scgiwsgi
import scgiwsgi.scgi_server


class EchoHandler(scgiwsgi.scgi_server.SCGIHandler):
    def produce_cgilike(self, env, bodysize):
        name = os.environ.get("QUERY_STRING", "")
        body = sys.stdin.read(bodysize)
        if name.startswith("slow"):
            time.sleep(0.5)  # overlap with other requests
        print("Status: 201 Created")
        print("Content-Type: text/plain; charset=utf-8")
        print()
        print(f"query={name}")
        print(f"body={body}")
        print(f"path={os.environ['PATH_INFO']}")


server = scgiwsgi.scgi_server.SCGIServer(handler_class=EchoHandler, port=4000)
server.serve()
