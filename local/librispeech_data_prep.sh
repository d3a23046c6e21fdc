#!/usr/bin/env bash
# LibriSpeech -> lhotse manifests (and a report of skipped/fixed items per part).
#
# Usage: local/librispeech_data_prep.sh [--nj 4] [--parts "auto"|"p1 p2"] [--max-duration 16.7] <corpus-dir> <manifest-dir>
#   e.g. local/librispeech_data_prep.sh --nj 4 --parts "train-clean-100 dev-clean test-clean" \
#          download/LibriSpeech data/manifests
# Writes <manifest-dir>/librispeech_{recordings,supervisions}_<part>.jsonl.gz, librispeech_<part>.report.txt
# and <manifest-dir>/.librispeech_<part>.done per part; parts with a marker are skipped.
set -euo pipefail

nj=4
parts=auto
max_duration=16.7

echo "$0 $*"
. utils/parse_options.sh

if [ $# -ne 2 ]; then
  echo "Usage: $0 [--nj 4] [--parts auto|\"p1 p2\"] [--max-duration 16.7] <corpus-dir> <manifest-dir>" >&2
  exit 1
fi
corpus_dir=$1
out_dir=$2
mkdir -p "$out_dir/log"

if [ "$parts" = auto ]; then
  parts=$(python -c "import sys; from qnet.corpus.librispeech import find_parts; print(' '.join(find_parts(sys.argv[1])))" "$corpus_dir")
  [ -n "$parts" ] || { echo "$0: no LibriSpeech part found in $corpus_dir" >&2; exit 1; }
fi
todo=
for p in $parts; do
  [ -f "$out_dir/.librispeech_$p.done" ] || todo="$todo $p"
done
if [ -z "$todo" ]; then
  echo "$0: manifests done for: $parts"
  exit 0
fi
# shellcheck disable=SC2086
python -m qnet.bin.prepare_librispeech -j "$nj" --max-duration "$max_duration" --parts $todo \
  --log-file "$out_dir/log/librispeech_data_prep.log" "$corpus_dir" "$out_dir"
failed=
for p in $todo; do
  if [ -f "$out_dir/librispeech_recordings_$p.jsonl.gz" ] && [ -f "$out_dir/librispeech_supervisions_$p.jsonl.gz" ]; then
    touch "$out_dir/.librispeech_$p.done"
  else
    failed="$failed $p"
  fi
done
if [ -n "$failed" ]; then
  echo "$0: no manifests for:$failed (see $out_dir/log/librispeech_data_prep.log)" >&2
  exit 1
fi
