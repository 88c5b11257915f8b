# Sourced by the other scripts: a virtual environment in .venv with the CPU build of torch and albumd.
# GPU hosts: see README ("GPU install") for the CUDA build of torch instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
    # pinned on purpose: an unpinned torch pulls a multi-GB CUDA build
    python -m pip install -q "torch==${ALBUMD_TORCH_VERSION:-2.13.0}"
fi
python -m pip install -q -e ".[test]"
