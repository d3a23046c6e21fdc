#!/usr/bin/env bash
# WSJ from the LDC discs (or a flattened copy) -> lhotse manifests, LM text and the LDC ARPAs.
#
# Usage: local/wsj_data_prep.sh [--sets "train_si284 test_dev93 test_eval92"] [--max-duration 16.7]
#                               --wsj0 <dir> --wsj1 <dir> <manifest-dir>
#   <dir>: the folder holding the discs (wsj0: 11-1.1 ... 11-14.1 ..., eval92's audio is on 11-14.1;
#          wsj1: 13-1.1 ... 13-34.1; also named 11_1.1, or one level down as LDC93S6B/csr_1/11-1.1),
#          a disc itself, or a flattened copy (CORPUS/wsj0, CORPUS/wsj1; the same CORPUS may be given
#          twice). Shorten-compressed audio needs sph2pipe (`lhotse install-sph2pipe`); this is checked
#          for every set before anything is written.
# Writes <manifest-dir>/wsj_{recordings,supervisions}_<set>.jsonl.gz, wsj_<set>.report.txt,
# wsj_lm_text.txt, wsj_ldc_lm/*.arpa.gz and <manifest-dir>/.wsj.done.
set -euo pipefail

sets="train_si284 test_dev93 test_eval92"
max_duration=16.7
wsj0=
wsj1=

echo "$0 $*"
. utils/parse_options.sh

if [ $# -ne 1 ] || [ -z "$wsj0" ] || [ -z "$wsj1" ]; then
  echo "Usage: $0 [--sets \"train_si284 test_dev93 test_eval92\"] --wsj0 <dir> --wsj1 <dir> <manifest-dir>" >&2
  exit 1
fi
out_dir=$1
if [ -f "$out_dir/.wsj.done" ]; then
  echo "$0: $out_dir/.wsj.done exists, nothing to do"
  exit 0
fi
mkdir -p "$out_dir/log"
# shellcheck disable=SC2086
python -m qnet.bin.prepare_wsj --wsj0 "$wsj0" --wsj1 "$wsj1" --sets $sets --max-duration "$max_duration" \
  --log-file "$out_dir/log/wsj_data_prep.log" "$out_dir"
for s in $sets; do
  for m in recordings supervisions; do
    if [ ! -f "$out_dir/wsj_${m}_$s.jsonl.gz" ]; then
      echo "$0: $out_dir/wsj_${m}_$s.jsonl.gz missing (see $out_dir/log/wsj_data_prep.log)" >&2
      exit 1
    fi
  done
done
touch "$out_dir/.wsj.done"
