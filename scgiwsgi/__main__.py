"""``python -m scgiwsgi``: the same as the ``scgi-wsgi`` command."""

from .cli import main

main()
