#!/usr/bin/env bash
# Compile HLG = H o det(L_disambig o G) with k2.
# Usage: steps/make_hlg.sh [--modified false] [--out LANG_DIR/HLG.pt] <lang-dir> <G.fst.txt>
#   e.g. steps/make_hlg.sh data/lang_char data/lm/G_3_gram.fst.txt
set -euo pipefail

modified=false
out=
help_message="Usage: $0 [--modified true|false] [--out HLG.pt] <lang-dir> <G.fst.txt>"

. utils/parse_options.sh

if [ $# -ne 2 ]; then
  echo "$help_message" >&2
  exit 1
fi
lang_dir=$1
lm=$2
[ -z "$out" ] && out=$lang_dir/HLG.pt
done_marker=$(dirname "$out")/.$(basename "$out").done

if [ -f "$done_marker" ] && [ -f "$out" ] && [ "$out" -nt "$lm" ]; then
  echo "$0: $out is up to date (remove $done_marker to redo)"
  exit 0
fi
for f in "$lang_dir/L_disambig.pt" "$lang_dir/tokens.txt" "$lang_dir/words.txt" "$lm"; do
  [ -f "$f" ] || { echo "$0: $f is missing" >&2; exit 1; }
done
python -m qnet.bin.compile_hlg --lang-dir "$lang_dir" --lm "$lm" --out "$out" --modified "$modified"
touch "$done_marker"
