#!/usr/bin/env bash
# Copy the InferenceModel CRD (crds/, the source of truth) into the Helm chart, which must
# carry a byte-identical copy (tests/unit/test_chart_crd.py checks it).
#
# Usage: hack/sync-crd.sh          copy
#        hack/sync-crd.sh --check  exit 1 if the chart's copy differs
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/crds/inferencemodel.yaml"
DST="$ROOT/charts/rtbserve/crds/inferencemodel.yaml"

[[ -f "$SRC" ]] || { echo "sync-crd: missing $SRC" >&2; exit 1; }
if [[ "${1:-}" == "--check" ]]; then
    if cmp -s "$SRC" "$DST"; then
        exit 0
    fi
    echo "sync-crd: $DST differs from $SRC; run hack/sync-crd.sh" >&2
    exit 1
fi
mkdir -p "$(dirname "$DST")"
cp "$SRC" "$DST"
echo "sync-crd: copied crds/inferencemodel.yaml into the chart" >&2
