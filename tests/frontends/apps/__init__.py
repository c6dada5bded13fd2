"""WSGI applications served by the front-end tests."""
