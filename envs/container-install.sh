#!/bin/sh
# The containers' install (Dockerfile, drfuse.def): every pin of requirements.txt, torch and
# torchvision from the wheel index given as $1, the rest from PyPI. Default index PyPI, whose torch
# is the CUDA 13.0 build (an NVIDIA driver >= 580 and a GPU of compute capability >= 7.5);
# https://download.pytorch.org/whl/cpu gives a CPU-only image. requirements.txt's last line, this
# project with its test extras, is left out: the image installs the package on its own, after this.
set -eu
index="${1:-https://pypi.org/simple}"
requirements="$(dirname "$0")/../requirements.txt"
torch_pins=$(mktemp)
other_pins=$(mktemp)
grep -E '^(torch|torchvision)==' "$requirements" >"$torch_pins"
grep -vE '^(torch|torchvision)==|^-e ' "$requirements" >"$other_pins"
pip install --no-cache-dir -r "$other_pins"
pip install --no-cache-dir --index-url "$index" -r "$torch_pins"
rm -f "$torch_pins" "$other_pins"
