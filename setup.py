"""Declares the C extensions; every other piece of metadata lives in pyproject.toml."""

from setuptools import Extension, setup

# hack/native-lint.sh compiles with these plus -Werror on gcc and clang; a user's build only warns.
WARNINGS = ["-Wall", "-Wextra", "-Wconversion", "-Wsign-compare", "-Wshadow", "-Werror=implicit"]

setup(
    ext_modules=[
        Extension(
            "model_server.native._forest",
            sources=["model_server/native/forest.c"],
            depends=[
                "model_server/native/request_path.h",
                "model_server/native/request_encode.h",
                "model_server/native/request_scan.h",
                "model_server/native/score_path.h",
            ],
            # Portable flags only: the same wheel must run on any arm64 / amd64 CPU, and no
            # fast-math, which would break the NaN (missing value) tests the evaluator relies on.
            extra_compile_args=["-O3", "-std=c11", *WARNINGS],
        ),
        # Byte work of the `score` call's Thrift framing (model_server/fast_codec.py).
        Extension(
            "model_server.native._codec",
            sources=["model_server/native/codec.c"],
            extra_compile_args=["-O3", "-std=c11", *WARNINGS],
        ),
        # The load generator's sending loop (loadgen/engine.py holds the Python reference).
        Extension(
            "loadgen.native._send_loop",
            sources=["loadgen/native/send_loop.c"],
            extra_compile_args=[
                "-O2",
                "-std=gnu11",
                *WARNINGS,
            ],
        ),
    ],
)
