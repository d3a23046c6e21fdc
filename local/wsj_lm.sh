#!/usr/bin/env bash
# WSJ word LMs, from what local/wsj_data_prep.sh extracted from the discs:
#   default      kenlm lmplz on WSJ's own LM text (<manifest-dir>/wsj_lm_text.txt, np_data 87-89):
#                a count-pruned 3-gram inside HLG and a 4-gram for rescoring; the vocabulary is the
#                --vocab-size most frequent words of that text (plus every training word).
#   --ldc true   the LDC ARPAs instead (<manifest-dir>/wsj_ldc_lm/<--ldc-hlg>.arpa.gz, by default
#                tcb20onp, the 20k open-vocabulary trigram Kaldi calls lm_tg) inside HLG; its 20k
#                words are the vocabulary; rescoring uses --ldc-rescore when given, else lmplz -o 4.
# The two phases and their outputs are those of local/librispeech_lm.sh, which does the work:
#   --phase text  <lm-dir>/{train_text.txt,vocab.txt}     (before the lang dir)
#   --phase lm    <lm-dir>/{G_3_gram,G_4_gram}.fst.txt    (against the lang dir's words.txt)
#
# Usage: local/wsj_lm.sh [options] <manifest-dir> <lm-dir>
#   e.g. local/wsj_lm.sh --phase text data/manifests data/lm
#        local/wsj_lm.sh --phase lm --lang-dir data/lang_char data/manifests data/lm
set -euo pipefail

phase=text
train_set=train_si284
text=                  # LM text; default <manifest-dir>/wsj_lm_text.txt
vocab_size=100000      # lmplz vocabulary size (0 = every word of the LM text)
prune_hlg="0 1 1"
prune_rescore=""
ldc=false              # use the LDC ARPAs from the discs
ldc_hlg=tcb20onp       # LDC ARPA (stem in <manifest-dir>/wsj_ldc_lm/) for HLG
ldc_rescore=           # LDC ARPA stem for rescoring (default: lmplz -o 4 on the LM text)
lang_dir=

help_message="Usage: $0 [--phase text|lm] [--train-set train_si284] [--text FILE] [--vocab-size N]
  [--prune-hlg \"0 1 1\"] [--prune-rescore \"\"] [--ldc true|false] [--ldc-hlg tcb20onp] [--ldc-rescore STEM]
  [--lang-dir DIR] <manifest-dir> <lm-dir>"

echo "$0 $*"
. utils/parse_options.sh

if [ $# -ne 2 ]; then
  echo "$help_message" >&2
  exit 1
fi
manifest_dir=$1
lm_dir=$2
[ -n "$text" ] || text=$manifest_dir/wsj_lm_text.txt

opts=(--phase "$phase" --prefix wsj --parts "$train_set" --text "$text" --vocab-size "$vocab_size"
      --prune-hlg "$prune_hlg" --prune-rescore "$prune_rescore" --lang-dir "$lang_dir")
if $ldc; then
  arpa_hlg=$manifest_dir/wsj_ldc_lm/$ldc_hlg.arpa.gz
  [ -f "$arpa_hlg" ] || { echo "$0: --ldc true, but $arpa_hlg is missing (not on the given discs?)" >&2; exit 1; }
  arpa_rescore=
  [ -n "$ldc_rescore" ] && arpa_rescore=$manifest_dir/wsj_ldc_lm/$ldc_rescore.arpa.gz
  opts+=(--source arpa --arpa-hlg "$arpa_hlg" --arpa-rescore "$arpa_rescore")
else
  [ -f "$text" ] || { echo "$0: no WSJ LM text $text (disc 13-32.1 missing?); pass --text FILE or --ldc true" >&2; exit 1; }
  opts+=(--source lmplz)
fi
local/librispeech_lm.sh "${opts[@]}" "$manifest_dir" "$lm_dir"
