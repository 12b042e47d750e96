#!/usr/bin/env bash
# Create .venv (once) and install the package with its test dependencies into it.
# torch is pinned to the CPU wheel this workplace keeps on disk (a bare `torch` would pull a multi-GB CUDA build);
# on your own machine any torch >= 2.1 works: install it first, then `pip install -e .[test]`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.condnet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,bench]"
    touch "$stamp"
fi
