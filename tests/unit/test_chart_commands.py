"""The commands the chart's containers run are real `rtbserve` subcommands with real flags.

The image's ENTRYPOINT is `rtbserve`; every container of the chart (and the model servers the
operator creates) runs `rtbserve <subcommand> [flags]`. Each subcommand is run as a process with
`--help`, and every flag the chart passes must be one it lists; the full argument lists are then
parsed by the subcommand's own parser, so values and combinations are checked too.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import dockerfile  # type: ignore[import-not-found]
import pytest

from tests.chart_tools import ALL_OPTIONS_VALUES, REPO_ROOT, Manifest, render

RTBSERVE = Path(sys.executable).parent / "rtbserve"
VARIANTS = {
    "defaults": (),
    "all-options": ("-f", str(ALL_OPTIONS_VALUES)),
    "loadgen-minimal": ("--set", "loadgen.enabled=true", "--set", "loadgen.target=ctr:9090"),
}


def containers(manifests: list[Manifest]) -> list[dict[str, Any]]:
    found = []
    for m in manifests:
        if m["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            found += m["spec"]["template"]["spec"]["containers"]
    return found


def chart_commands() -> list[tuple[str, list[str]]]:
    """(variant/container, argv) for every container of every variant."""
    out = []
    for variant, args in VARIANTS.items():
        for c in containers(render(*args, include_crds=False)):
            out.append((f"{variant}/{c['name']}", [*c["command"], *c["args"]]))
    return out


def image_entrypoint() -> list[str]:
    commands = dockerfile.parse_file(str(REPO_ROOT / "Dockerfile"))
    entrypoint = [c for c in commands if c.cmd == "ENTRYPOINT"][-1]
    return list(entrypoint.value)


@functools.cache
def help_flags(subcommand: str) -> frozenset[str]:
    proc = subprocess.run(
        [str(RTBSERVE), subcommand, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"rtbserve {subcommand} --help failed:\n{proc.stderr}"
    return frozenset(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", proc.stdout))


@pytest.fixture(scope="module")
def commands() -> list[tuple[str, list[str]]]:
    return chart_commands()


def test_chart_runs_the_image_entrypoint(commands: list[tuple[str, list[str]]]) -> None:
    assert commands
    entrypoint = image_entrypoint()
    for where, argv in commands:
        assert argv[: len(entrypoint)] == entrypoint, where


def test_every_flag_is_listed_by_the_subcommand_help(
    commands: list[tuple[str, list[str]]],
) -> None:
    from rtbserve.cli import SUBCOMMANDS

    for where, argv in commands:
        subcommand, *flags = argv[1:]
        assert subcommand in SUBCOMMANDS, where
        known = help_flags(subcommand)
        for flag in flags:
            name = flag.split("=", 1)[0]
            assert name in known, f"{where}: {name} is not a flag of `rtbserve {subcommand}`"


def test_operator_arguments_parse(commands: list[tuple[str, list[str]]]) -> None:
    from rtbserve_operator.cli import parse_args

    operators = [argv for _, argv in commands if argv[1] == "operator"]
    assert len(operators) == len(VARIANTS)
    for argv in operators:
        args = parse_args(argv[2:])
        assert args.default_image.startswith(("rtbserve:", "123456789012.dkr.ecr"))
        assert args.all_namespaces or args.namespace


def test_loadgen_arguments_parse(commands: list[tuple[str, list[str]]]) -> None:
    options = pytest.importorskip("loadgen.options")
    loadgens = [argv for _, argv in commands if argv[1] == "loadgen"]
    assert len(loadgens) == 2  # all-options and loadgen-minimal
    for argv in loadgens:
        config = options.parse_config(argv[2:])
        assert config.output.live is False  # --plain: a Job has no terminal


def test_operator_ports_match_its_flags() -> None:
    manifests = render("--set", "operator.metricsPort=9200", include_crds=False)
    (container,) = containers(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert "--metrics-port=9200" in container["args"]
    assert ports["http-metrics"] == 9200
    assert f"--liveness-port={ports['http-health']}" in container["args"]
    assert container["livenessProbe"]["httpGet"]["port"] == "http-health"


def test_model_servers_run_the_image_default_command() -> None:
    # The operator builds the model-server pods; they must run the image's ENTRYPOINT + CMD.
    builders = pytest.importorskip("rtbserve_operator.builders")
    from rtbserve_operator.identity import ModelIdentity
    from rtbserve_operator.spec import InferenceModel

    body = {
        "metadata": {"name": "ctr", "namespace": "rtbserve", "uid": "u", "generation": 1},
        "spec": {"artifact": {"uri": "s3://bucket/models/ctr/"}},
    }
    model = InferenceModel.from_body(body, default_image="rtbserve:test")
    identity = ModelIdentity(
        uri="s3://bucket/models/ctr/", sha256="0" * 64, version_id=None, name="ctr", version="1"
    )
    deployment = builders.build_deployment(model, identity)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    commands = dockerfile.parse_file(str(REPO_ROOT / "Dockerfile"))
    cmd = [c for c in commands if c.cmd == "CMD"][-1]
    assert container["command"] == image_entrypoint()
    assert container["args"] == list(cmd.value)
