"""Example applications for scgiwsgi (importable as ``examples.*`` from the repo root)."""
