#!/usr/bin/env bash
# Word n-gram LM -> G.fst.txt for a lang dir: kenlm lmplz on text, or a ready ARPA (plain or .gz).
# Usage: steps/train_lm.sh [--order 3] [--prune "0 1 1"] [--name G_3_gram] [--binary false] \
#          <text|lm.arpa[.gz]> <lang-dir> <lm-dir>
#   e.g. steps/train_lm.sh --order 4 --name G_4_gram data/lm/text.txt data/lang_char data/lm
#        steps/train_lm.sh --name G_3_gram download/lm/3-gram.pruned.1e-7.arpa.gz data/lang_bpe_500 data/lm
set -euo pipefail

order=3
prune=
name=G_3_gram
binary=false
help_message="Usage: $0 [--order N] [--prune 'T1 T2 ...'] [--name NAME] [--binary true|false] <text|arpa> <lang-dir> <lm-dir>"

. utils/parse_options.sh

if [ $# -ne 3 ]; then
  echo "$help_message" >&2
  exit 1
fi
src=$1
lang_dir=$2
lm_dir=$3

done_marker=$lm_dir/.$name.done
if [ -f "$done_marker" ] && [ -f "$lm_dir/$name.fst.txt" ]; then
  echo "$0: $lm_dir/$name.fst.txt exists (remove $done_marker to redo)"
  exit 0
fi
[ -f "$src" ] || { echo "$0: no such file: $src" >&2; exit 1; }
[ -f "$lang_dir/words.txt" ] || { echo "$0: $lang_dir/words.txt is missing; run steps/prepare_lang.sh" >&2; exit 1; }
mkdir -p "$lm_dir"

case "$src" in
  *.arpa|*.arpa.gz) input=(--arpa "$src") ;;
  *) input=(--text "$src") ;;
esac
opts=()
[ -n "$prune" ] && opts+=(--prune $prune)
python -m qnet.bin.make_lm "${input[@]}" --order "$order" --binary "$binary" \
  --lang-dir "$lang_dir" --out-dir "$lm_dir" --name "$name" "${opts[@]}"
touch "$done_marker"
