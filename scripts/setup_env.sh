#!/usr/bin/env bash
# Create .venv (once) and install the package with its test dependencies into it.
# torch: a torch already in .venv (>= 2.1, e.g. a CUDA build you installed) is kept; otherwise torch 2.13.0 is
# installed, from TORCH_INDEX_URL when set (https://download.pytorch.org/whl/cpu gives the CPU build; PyPI's
# Linux wheel is a CUDA build, several GB larger), else from pip's default index (this project's CI finds the
# CPU wheel on its own disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.condnet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    if ! .venv/bin/python -c "import torch" 2>/dev/null; then
        .venv/bin/python -m pip install --quiet --disable-pip-version-check \
            ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,bench]"
    touch "$stamp"
fi
