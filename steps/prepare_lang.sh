#!/usr/bin/env bash
# Build an icefall-style lang dir (tokens.txt, words.txt, lexicon*.txt, L.pt, L_disambig.pt[, bpe.model]).
# Usage: steps/prepare_lang.sh [--unit char|bpe] [--bpe-size N] [--words "vocab.txt ..."] <train-text> <lang-dir>
#   e.g. steps/prepare_lang.sh --unit bpe --bpe-size 256 data/train/text_only.txt data/lang_bpe_256
set -euo pipefail

unit=char
bpe_size=0
words=
help_message="Usage: $0 [--unit char|bpe] [--bpe-size N] [--words WORDLIST] <train-text> <lang-dir>"

. utils/parse_options.sh

if [ $# -ne 2 ]; then
  echo "$help_message" >&2
  exit 1
fi
text=$1
lang_dir=$2

if [ -f "$lang_dir/.done" ]; then
  echo "$0: $lang_dir is already prepared (remove $lang_dir/.done to redo)"
  exit 0
fi
[ -f "$text" ] || { echo "$0: no such file: $text" >&2; exit 1; }

opts=()
[ "$unit" = bpe ] && opts+=(--bpe-size "$bpe_size")
[ -n "$words" ] && opts+=(--words $words)
python -m qnet.bin.prepare_lang --unit "$unit" --text "$text" --lang-dir "$lang_dir" "${opts[@]}"
touch "$lang_dir/.done"
