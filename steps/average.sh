#!/usr/bin/env bash
# Average the last --avg epoch checkpoints of a training run into one model (python -m qnet.bin.average).
#
# Usage: steps/average.sh [--cmd run.pl] [--epoch N] [--avg 5] [--out FILE] <exp-dir>
#   e.g. steps/average.sh --avg 5 --out exp/quartznet_15x5/averaged-avg-5.pt exp/quartznet_15x5
#
# --epoch defaults to the newest epoch-N.pt in <exp-dir>; epochs N-avg+1 .. N must all exist.
# --out defaults to <exp-dir>/averaged-avg-<avg>.pt. Logs to <exp-dir>/log/average.log. The output is
# skipped when it already exists together with its .done marker (<out>.done, written after success).
set -euo pipefail

cmd=run.pl
epoch=0
avg=5
out=
help_message="Usage: $0 [--cmd run.pl] [--epoch N] [--avg 5] [--out FILE] <exp-dir>"

echo "$0 $*"
. utils/parse_options.sh

if [ $# -ne 1 ]; then
  echo "$help_message" >&2
  exit 1
fi
exp_dir=$1
[ -n "$out" ] || out=$exp_dir/averaged-avg-$avg.pt
if ! ls "$exp_dir"/epoch-*.pt >/dev/null 2>&1; then
  echo "$0: no epoch-*.pt checkpoints in $exp_dir" >&2
  exit 1
fi
if [ -f "$out" ] && [ -f "$out.done" ]; then
  echo "$0: $out exists ($out.done), skipping"
  exit 0
fi
mkdir -p "$exp_dir/log"
$cmd "$exp_dir/log/average.log" python -m qnet.bin.average --exp-dir "$exp_dir" --epoch "$epoch" --avg "$avg" --out "$out"
touch "$out.done"
echo "$0: wrote $out"
