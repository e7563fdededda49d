"""Native (C) parts of the load generator, built at install time by setup.py."""
