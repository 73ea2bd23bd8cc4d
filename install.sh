#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with the
# project and every dependency, lava-nc 0.10.0 included (docs/fixedpoint.md, "Python 3.11").
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# lava-nc declares Python < 3.11 but runs on 3.11: install it alone, without its
# dependencies, so that ignoring requires-python does not leak into the resolver.
python -m pip show lava-nc >/dev/null 2>&1 || \
    python -m pip install -q --no-deps --ignore-requires-python lava-nc==0.10.0
python -m pip install -q -e '.[test]'
# SpikingJelly (a NIR consumer of the tests) declares torchvision and torchaudio, which would
# pull another torch; it runs without them.
python -m pip show spikingjelly >/dev/null 2>&1 || \
    python -m pip install -q --no-deps spikingjelly==2.0.0
