# Source me: `. path.sh` (from the repository root or a recipe dir that sources this file).
# Activates the project venv and puts qnet's shell tools and kenlm binaries on PATH.
if [ -n "${BASH_SOURCE[0]:-}" ]; then
  QNET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
else
  QNET_ROOT=$(pwd)
fi
export QNET_ROOT
if [ ! -f "$QNET_ROOT/.venv/bin/activate" ]; then
  echo "path.sh: $QNET_ROOT/.venv is missing; run $QNET_ROOT/tools/setup.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "$QNET_ROOT/.venv/bin/activate"
export PATH=$QNET_ROOT/utils:$QNET_ROOT/steps:$QNET_ROOT/tools/kenlm/bin:$PATH
export PYTHONPATH=$QNET_ROOT${PYTHONPATH:+:$PYTHONPATH}
export LC_ALL=C
export PYTHONUNBUFFERED=1
# Idle OpenMP threads sleep instead of spinning: on a shared or busy machine, spinning threads that wait
# for a descheduled partner made a 2-thread training step ~10x slower (measured, bench/README.md).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# torch 1.13 ships MKL 2020, which picks a slow code path on AMD CPUs (2.6x slower matmuls measured on
# our machines, bench/README.md); this switch is harmless there and is not set on Intel (AVX-512 path).
if grep -q AuthenticAMD /proc/cpuinfo 2>/dev/null; then export MKL_DEBUG_CPU_TYPE=5; fi
# Python's protobuf fallback avoids a known segfault with tensorboard + sentencepiece (icefall#674).
export PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python
