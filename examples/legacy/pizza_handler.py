#! /usr/bin/env python3
"""The classic python-scgi order form: pizza and drink from the query string.

``/order?pizza=margherita&drink=lemonade`` confirms the order.  Leave out an
argument and the handler dies with a KeyError, as the original did; under
python-scgi that killed the child and the browser got nothing, here the
front end gets a 500, the traceback is logged and the next order is served.
Only the import lines and the module prefix differ from the python-scgi
version (and ``cgi.parse_qs`` is ``urllib.parse.parse_qs`` on Python 3).
"""

import urllib.parse

import scgiwsgi
import scgiwsgi.scgi_server


class PizzaHandler(scgiwsgi.scgi_server.SCGIHandler):
    def produce(self, env, bodysize, input, output):
        args = urllib.parse.parse_qs(env["QUERY_STRING"])
        pizza = args["pizza"][0]
        drink = args["drink"][0]
        output.write(b"Content-Type: text/plain; charset=utf-8\n\n")
        output.write(f"One {pizza} pizza and a {drink}, coming up!\n")


server = scgiwsgi.scgi_server.SCGIServer(handler_class=PizzaHandler, port=4000)
server.serve()
