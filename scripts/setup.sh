#!/usr/bin/env bash
# Make .venv with everything avlips needs, pinned by requirements/lock.txt. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# torch first and pinned: an unpinned torch would pull several GB of CUDA packages.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements/lock.txt -e ".[dev]"
# DVC needs a git repository; a tarball checkout gets one.
[ -d .git ] || git init -q
echo "setup done: $(.venv/bin/avlips --version)"
