#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_check.sh installs offline on a GPU machine that has PyTorch
# but none of the project's other dependencies (and no network). Run it HERE, on a machine with
# PyPI access; the wheels land in benchmarks/wheels/ (git-ignored), which the device tool carries
# (name it in `carry`). Targets the GPU image's Python (PYVER, default 3.12), x86-64 manylinux.
# What it downloads: benchmarks/gpu_deps.py (the project's dependencies but torch, matplotlib and
# tokenizers, which the check does not import; pytest; setuptools) and everything they need.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PYVER=${PYVER:-3.12}
DEST=benchmarks/wheels
mkdir -p "$DEST"
reqs=$(mktemp)
trap 'rm -f "$reqs"' EXIT
"$PY" benchmarks/gpu_deps.py > "$reqs"
platforms=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --only-binary=:all: --implementation cp --python-version "$PYVER" "${platforms[@]}" \
  -d "$DEST" -r "$reqs"
echo "$(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
