"""Sphinx configuration for the scgiwsgi documentation."""

project = "scgiwsgi"
author = "the scgiwsgi developers"
release = "0.1.0"
extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
