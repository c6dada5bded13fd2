"""Sphinx configuration for the scgiwsgi documentation.

Build (CI runs this, warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys

# Document the package of this checkout, installed or not.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

project = "scgiwsgi"
author = "the scgiwsgi developers"
release = "0.1.0"
extensions = ["sphinx.ext.autodoc", "sphinx_click"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
# Option names such as --fork in click help texts must stay two hyphens.
smartquotes_action = "qe"
