#!/usr/bin/env bash
# Wheels that benchmarks/device_check.py needs on the GPU device machine and its image lacks, into .whl/
# (carried with the device call; at most 64 MiB). The image holds Python 3.12, torch, numpy,
# safetensors, huggingface_hub (1.33 >= diffusers' 1.32), filelock, regex, requests, pillow, pyyaml,
# tqdm, fsspec, opencv-python-headless: of diffusers' requirements only importlib_metadata is missing,
# and diffusers imports it only on Python < 3.8 (3.12 uses importlib.metadata), so it is not carried.
# Versions come from constraints.txt (the tested set).
set -euo pipefail
cd "$(dirname "$0")/.."
WANT=(diffusers)
DEST=.whl
rm -rf "$DEST" && mkdir -p "$DEST"
for name in "${WANT[@]}"; do
    pin=$(grep -i "^${name}==" constraints.txt) || { echo "error: ${name} is not pinned in constraints.txt" >&2; exit 2; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$DEST" "$pin"
done
ls -l "$DEST"/*.whl | awk '{printf "%s %.2f MiB\n", $NF, $5 / 1048576; total += $5} END {printf "total %.2f MiB\n", total / 1048576; if (total > 64 * 1048576) {print "error: over the 64 MiB a device call carries" > "/dev/stderr"; exit 1}}'
