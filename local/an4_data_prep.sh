#!/usr/bin/env bash
# AN4 (an4_sphere layout) -> lhotse manifests for train, dev (train speakers held out) and test.
#
# Usage: local/an4_data_prep.sh [--num-dev-speakers 8] [--max-speakers 0] [--max-duration 16.7] <corpus-dir> <manifest-dir>
# Writes <manifest-dir>/an4_{recordings,supervisions}_{train,dev,test}.jsonl.gz, an4_<part>.report.txt
# (skipped/fixed items), an4_dev_speakers.txt, the an4_audio/ links, and <manifest-dir>/.an4.done.
set -euo pipefail

num_dev_speakers=8
max_speakers=0       # >0: only the first N speakers of CMU's train and test lists (smoke runs)
max_duration=16.7

echo "$0 $*"
. utils/parse_options.sh

if [ $# -ne 2 ]; then
  echo "Usage: $0 [--num-dev-speakers 8] [--max-speakers 0] [--max-duration 16.7] <corpus-dir> <manifest-dir>" >&2
  exit 1
fi
corpus_dir=$1
out_dir=$2
if [ -f "$out_dir/.an4.done" ]; then
  echo "$0: $out_dir/.an4.done exists, nothing to do"
  exit 0
fi
mkdir -p "$out_dir/log"
python -m qnet.bin.prepare_an4 --num-dev-speakers "$num_dev_speakers" --max-speakers "$max_speakers" \
  --max-duration "$max_duration" --log-file "$out_dir/log/an4_data_prep.log" "$corpus_dir" "$out_dir"
touch "$out_dir/.an4.done"
