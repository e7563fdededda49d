#!/usr/bin/env bash
# The C extensions' hygiene: warnings as errors on gcc and on clang, clang-format's style
# (.clang-format), and cppcheck. The Debian packages it needs are installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CLANG=${CLANG:-clang-14}
SOURCES=(model_server/native/forest.c model_server/native/codec.c loadgen/native/send_loop.c)
# The headers under model_server/native are included once each, by forest.c (see their heads).
FILES=("${SOURCES[@]}" model_server/native/*.h)
WARNINGS=(-Wall -Wextra -Wconversion -Wsign-compare -Wshadow -Wstrict-prototypes -Werror)

missing=()
command -v "$CLANG" >/dev/null || missing+=(clang-14)
command -v clang-format-14 >/dev/null || missing+=(clang-format-14)
command -v cppcheck >/dev/null || missing+=(cppcheck)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "[native-lint] installing ${missing[*]} (Debian packages)" >&2
    $sudo apt-get install -y -q "${missing[@]}" >/dev/null
fi

include=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
for cc in gcc "$CLANG"; do
    for src in "${SOURCES[@]}"; do
        "$cc" -std=gnu11 -O2 -fsyntax-only "${WARNINGS[@]}" -I"$include" "$src"
    done
    echo "[native-lint] $cc: no warnings" >&2
done
clang-format-14 --dry-run -Werror "${FILES[@]}"
echo "[native-lint] clang-format: formatted" >&2
cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance --std=c11 \
    -I"$include" --suppress=missingIncludeSystem --suppress=toomanyconfigs --inline-suppr \
    "${SOURCES[@]}"
echo "[native-lint] cppcheck: no findings" >&2
