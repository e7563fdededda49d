#!/usr/bin/env bash
# The C extensions under AddressSanitizer and UndefinedBehaviorSanitizer, with libFuzzer's
# coverage hooks, in a copy of the tree (build/sanitize/src), so the normal build stays as it is.
#
#   hack/native-sanitize.sh build   build the sanitized extensions
#   hack/native-sanitize.sh test    build, then every unit test that reaches native code
#   hack/native-sanitize.sh fuzz    build, then each fuzz target for FUZZ_SECONDS (default 60)
#   hack/native-sanitize.sh all     build, test, fuzz (what `make test` runs)
#
# Any sanitizer report stops the process (halt_on_error) and fails the run. clang and its
# runtime come from Debian (clang-14, libclang-rt-14-dev); installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
CLANG=${CLANG:-clang-14}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
OUT=$ROOT/build/sanitize
CACHE=${RTBSERVE_CACHE_DIR:-$HOME/.cache/rtbserve}/sanitize

log() { printf '[native-sanitize] %s\n' "$*" >&2; }

ensure_clang() {
    local rt
    rt=$("$CLANG" -print-file-name=libclang_rt.fuzzer_no_main-x86_64.a 2>/dev/null || true)
    if command -v "$CLANG" >/dev/null && [ -f "$rt" ]; then
        return
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        sudo="sudo -n"
    fi
    log "installing clang-14 and its sanitizer runtime (Debian packages)"
    $sudo apt-get install -y -q clang-14 libclang-rt-14-dev >/dev/null
}

# One shared object with ASan's runtime (less its preinit part, which a shared object cannot
# carry) and libFuzzer: preloaded, it gives the extensions their sanitizer and atheris the
# libFuzzer that sees the extensions' coverage counters.
runtime() {
    local libdir key so
    libdir=$(dirname "$("$CLANG" -print-file-name=libclang_rt.asan-x86_64.a)")
    key=$("$CLANG" --version | head -1 | sha1sum | cut -c1-12)
    so=$CACHE/$key/asan_with_fuzzer.so
    if [ ! -f "$so" ]; then
        log "linking $so"
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && ar x "$libdir/libclang_rt.asan-x86_64.a" && rm -f asan_preinit.cpp.o)
        mkdir -p "$(dirname "$so")"
        "$CLANG" -shared -fPIC -o "$so.tmp" "$tmp"/*.o \
            -Wl,--whole-archive "$libdir/libclang_rt.asan_cxx-x86_64.a" \
            "$libdir/libclang_rt.fuzzer_no_main-x86_64.a" -Wl,--no-whole-archive \
            -lpthread -ldl -lrt -lm -lstdc++
        mv "$so.tmp" "$so"
        rm -rf "$tmp"
    fi
    echo "$so"
}

build() {
    ensure_clang
    "$PY" -c "import atheris" 2>/dev/null || "$PY" -m pip install --quiet atheris
    rm -rf "$OUT/src"
    mkdir -p "$OUT/src"
    git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$OUT/src"
    # The tests look for ../shared beside the tree (IAB's examples).
    rm -f "$OUT/shared"
    if [ -d "$ROOT/../shared" ]; then
        ln -s "$(cd "$ROOT/../shared" && pwd)" "$OUT/shared"
    fi
    log "building the extensions with $CLANG -fsanitize=address,undefined,fuzzer-no-link"
    (
        cd "$OUT/src"
        CC=$CLANG LDSHARED="$CLANG -shared" \
            CFLAGS="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all" \
            "$PY" setup.py --quiet build_ext --inplace >/dev/null 2>&1
    )
    local so
    for so in "$OUT"/src/model_server/native/_forest*.so "$OUT"/src/model_server/native/_codec*.so \
        "$OUT"/src/loadgen/native/_send_loop*.so; do
        if ! nm -D "$so" | grep __asan_init >/dev/null; then
            log "$so is not instrumented"
            exit 1
        fi
    done
}

# The environment every sanitized process runs in (the server's worker processes included).
sanitized_env() {
    export LD_PRELOAD
    LD_PRELOAD=$(runtime)
    # Leaks are checked per input by the fuzz runs (-detect_leaks); at interpreter exit
    # CPython leaves memory it never frees, which LeakSanitizer would report.
    export ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=0:allocator_may_return_null=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    export PYTHONPATH=$OUT/src
    export PYTHONDONTWRITEBYTECODE=1
}

run_tests() {
    (
        sanitized_env
        cd "$OUT/src"
        "$PY" - <<'EOF'
import model_server.native._forest as f, model_server.native._codec as c, loadgen.native._send_loop as s
for m in (f, c, s):
    assert "/build/sanitize/src/" in m.__file__, m.__file__
print("sanitized modules:", f.__file__, c.__file__, s.__file__)
EOF
        log "unit tests that reach native code"
        "$PY" -m pytest -p no:cacheprovider -q -m native tests/unit
    )
}

run_fuzz() {
    (
        sanitized_env
        # Leaks per input: with every object from malloc, one an extension leaks (a missed
        # decref) is memory nothing points to, which libFuzzer's -detect_leaks reports.
        export ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=1:leak_check_at_exit=0
        export PYTHONMALLOC=malloc
        cd "$OUT/src"
        "$PY" -m tests.fuzz.campaign --seconds "$FUZZ_SECONDS" --work "$OUT/fuzz" \
            --keep "$ROOT/tests/fuzz/regressions"
    )
}

case "${1:-all}" in
build) build ;;
test) build && run_tests ;;
fuzz) build && run_fuzz ;;
all) build && run_tests && run_fuzz ;;
*) echo "usage: $0 {build|test|fuzz|all}" >&2; exit 2 ;;
esac
