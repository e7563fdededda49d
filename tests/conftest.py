"""Fixtures shared across the suite live in plugin modules, one per part of the system."""

pytest_plugins = [
    "tests.cluster.fixtures",
    "tests.s3_fixtures",
    "tests.server_fixtures",
    "tests.loadgen_fixtures",
    "tests.operator_fixtures",
]
