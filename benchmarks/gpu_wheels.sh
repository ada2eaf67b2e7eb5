#!/bin/sh
# Wheels the GPU device needs to run `python -m benchmarks.gpu` (docs/performance.md, "how to reproduce
# on a GPU"). The device's image has Python 3.12, torch 2.11, numpy, opencv-python-headless, scipy,
# safetensors, typer, tqdm, pyyaml, pillow and torchvision, but no segment_anything, pycocotools or
# omegaconf, and it cannot reach a registry. This downloads (here, where PyPI is reachable) into
# out/gpu-wheels/ (gitignored; carried to the device):
#   - segment-anything (pure Python), pycocotools (cp312 manylinux), omegaconf (pure Python);
#   - antlr4-python3-runtime 4.9.3 (omegaconf's pin; PyPI has only its sdist, so it is built into a
#     pure-Python wheel here);
#   - sumseg itself as a wheel (--no-deps; its metadata says Python < 3.12, so the device installs it
#     with --ignore-requires-python), built from a copy of the tracked files.
# torch is never downloaded. Usage: sh benchmarks/gpu_wheels.sh [PIP]   (default: .venv/bin/pip)
set -eu
PIP=${1:-.venv/bin/pip}
DEST=out/gpu-wheels
mkdir -p "$DEST"

# binary wheels for the device's interpreter (CPython 3.12, x86_64 Linux), dependencies not followed
# (the device has them: numpy, pyyaml, matplotlib)
"$PIP" download -q --dest "$DEST" --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any \
    "segment-anything==1.0" "pycocotools>=2.0.7" "omegaconf>=2.3,<2.4"

# omegaconf 2.3 pins antlr4-python3-runtime 4.9.*, published as an sdist only: build its pure-Python wheel
"$PIP" wheel -q --no-deps --wheel-dir "$DEST" "antlr4-python3-runtime==4.9.3"

# sumseg from its tracked files (a copy, so the build leaves nothing in the working tree)
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
git ls-files -z | xargs -0 cp --parents -t "$SRC"
"$PIP" wheel -q --no-deps --wheel-dir "$DEST" "$SRC"

ls -l "$DEST"
du -sh "$DEST"
