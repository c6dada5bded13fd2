"""Tests against real front-end web servers (nginx), started on loopback by the tests."""
