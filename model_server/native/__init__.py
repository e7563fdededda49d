"""Native (C) parts of the model server, built at install time by setup.py."""
