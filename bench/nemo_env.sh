#!/usr/bin/env bash
# Create (idempotently) a separate Python 3.11 venv with NVIDIA NeMo 3.0.0 for the speed comparison in
# bench/bench_model_speed.py. It lives OUTSIDE the repository (default /work/nemo-venv) because NeMo
# needs torch 2.x, while qnet's own venv pins torch 1.13.1 for k2.
#
# Usage: bench/nemo_env.sh [--venv DIR] [--python python3.11] [--torch 2.13.0]
set -euo pipefail

venv=/work/nemo-venv
python=python3.11
torch_version=2.13.0
nemo_version=3.0.0

while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --torch) torch_version=$2; shift 2 ;;
    -h|--help) sed -n 2,7p "$0"; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; exit 1 ;;
  esac
done

if [ -f "$venv/.done" ]; then
  echo "$0: $venv is ready (remove $venv/.done to reinstall)"
  exit 0
fi

command -v "$python" >/dev/null || { echo "$0: $python not found (NeMo $nemo_version needs Python >= 3.10)" >&2; exit 1; }

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --upgrade pip wheel
# CPU torch first, so that NeMo's requirements do not pull a CUDA build.
"$venv/bin/pip" install "torch==$torch_version"
"$venv/bin/pip" install "nemo-toolkit[asr]==$nemo_version"
"$venv/bin/python" -c "import torch, nemo.collections.asr as a; print('torch', torch.__version__, 'nemo ok')"
touch "$venv/.done"
echo "$0: $venv is ready"
