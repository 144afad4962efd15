#!/usr/bin/env bash
# Wheels that benchmarks/gpu.py needs on a GPU machine with no network whose Python (3.12) already has
# torch, transformers, peft and accelerate but not the rest: downloaded here into .whl/ (git-ignored,
# about 47 MB), installed there with `pip install --no-index --no-deps --target /tmp/site .whl/*.whl`.
# vLLM (hundreds of MB) does not fit such a transfer: its row then says "skipped: vLLM is not installed".
set -euo pipefail
cd "$(dirname "$0")/.."
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl \
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pydantic==2.14.4 pydantic-core==2.50.5 \
  annotated-types==0.8.0 typing-inspection==0.4.5 bitsandbytes==0.50.2 liger-kernel==0.8.5
ls -la .whl
