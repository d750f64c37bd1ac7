#!/usr/bin/env bash
# The GPU check on a machine without network:  bench/gpu_check.sh --out DIR [--skip-demo] [any gpu_check.py option]
# First the packages: when bench/wheels/ is there (bench/gather_wheels.py fills it; it is git-ignored, so bring it
# along), every requirement in bench/wheels/requirements.txt that the machine's own packages do not meet (missing,
# or below thinktrain's pins) is installed from those wheels, offline, into a venv that also sees the system's
# packages (torch with CUDA): $GPU_CHECK_VENV, default /tmp/thinktrain-gpu-check-venv. Nothing system-wide changes.
# Then bench/gpu_check.py with the arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ -f bench/wheels/requirements.txt ]]; then
  VENV=${GPU_CHECK_VENV:-/tmp/thinktrain-gpu-check-venv}
  if [[ ! -x $VENV/bin/python ]]; then  # without ensurepip (some distributions), a venv without pip, filled by ours
    $PY -m venv --system-site-packages "$VENV" 2>/dev/null || $PY -m venv --system-site-packages --without-pip "$VENV"
  fi
  if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then PIP=("$VENV/bin/python" -m pip)
  else PIP=("$PY" -m pip --python "$VENV/bin/python"); fi
  "${PIP[@]}" install --quiet --disable-pip-version-check --no-index --find-links bench/wheels \
    -r bench/wheels/requirements.txt
  PY=$VENV/bin/python
fi
exec "$PY" bench/gpu_check.py "$@"
