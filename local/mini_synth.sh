#!/usr/bin/env bash
# Synthesize the two small TTS corpora of egs/mini (offline, deterministic from --seed):
#   <out-dir>/LibriSpeech/{train-clean-100,dev-clean,test-clean}  + <out-dir>/lm/librispeech-lm-norm.txt
#   <out-dir>/wsj/LDC93S6B/11-*.1/wsj0/...  + <out-dir>/wsj/LDC94S13B/13-*.1/wsj1/...
# Each corpus gets a .done marker after success; a rerun with the same options does nothing, and an
# interrupted run resumes (finished audio files are kept). Logs: <out-dir>/log/synth_<layout>.log.
set -euo pipefail

smoke=false      # true: 20/5/5 utterances per corpus (CI)
seed=0
nj=2             # parallel synthesis processes
synth_opts=      # extra options for qnet.bin.synth_corpus (both corpora), e.g. "--num-lm 50000"

help_message="Usage: $0 [options] <out-dir>
Options:
  --smoke <true|false>   # tiny corpora for CI (default: $smoke)
  --seed <int>           # random seed; same seed -> identical files (default: $seed)
  --nj <int>             # parallel synthesis processes (default: $nj)
  --synth-opts <str>     # extra options for python -m qnet.bin.synth_corpus (default: '$synth_opts')
"

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC1091
. "$script_dir/../utils/parse_options.sh"

if [ $# -ne 1 ]; then
  printf '%s\n' "$help_message" >&2
  exit 1
fi
out=$1

if [ -z "${QNET_ROOT:-}" ]; then
  # shellcheck disable=SC1091
  . "$script_dir/../path.sh"
fi

mkdir -p "$out/log"
for layout in librispeech wsj; do
  if [ "$layout" = librispeech ]; then dest=$out; else dest=$out/wsj; fi
  marker=$out/.${layout}.done
  settings="layout=$layout smoke=$smoke seed=$seed synth_opts=$synth_opts"
  if [ -f "$marker" ]; then
    if [ "$(cat "$marker")" != "$settings" ]; then
      echo "$0: $marker was made with '$(cat "$marker")', not '$settings'; use another <out-dir>" >&2
      exit 1
    fi
    echo "$0: $layout corpus already synthesized in $dest ($marker)"
    continue
  fi
  echo "$0: synthesizing the $layout-layout corpus into $dest (log: $out/log/synth_$layout.log)"
  # shellcheck disable=SC2086
  python -m qnet.bin.synth_corpus --layout "$layout" --out "$dest" --seed "$seed" --smoke "$smoke" \
    --nj "$nj" --log "$out/log/synth_$layout.log" $synth_opts
  printf '%s\n' "$settings" > "$marker.tmp"
  mv "$marker.tmp" "$marker"
done
echo "$0: done: $out/LibriSpeech, $out/lm, $out/wsj"
