#!/usr/bin/env bash
# Get LibriSpeech into <dl-dir>/LibriSpeech, unless it is already there.
#
# Usage: local/librispeech_download.sh [--corpus-dir DIR] [--mini false] [--parts "p1 p2"] <dl-dir>
#   --corpus-dir DIR  an existing LibriSpeech copy (the folder holding train-clean-100/ ...): it is
#                     symlinked as <dl-dir>/LibriSpeech and nothing is downloaded.
#   --mini true       Mini LibriSpeech (dev-clean-2, train-clean-5) instead of the full corpus.
#   --parts           parts that must be present for the download to be skipped (default: all of
#                     the chosen corpus).
# Downloads use `lhotse download librispeech [--mini] <dl-dir>` (openslr 12 / 31), which keeps the
# archives it already has. Writes <dl-dir>/LibriSpeech/.download.done after success.
set -euo pipefail

corpus_dir=
mini=false
parts=

echo "$0 $*"
. utils/parse_options.sh

if [ $# -ne 1 ]; then
  echo "Usage: $0 [--corpus-dir DIR] [--mini true|false] [--parts \"p1 p2\"] <dl-dir>" >&2
  exit 1
fi
dl_dir=$1
target=$dl_dir/LibriSpeech
if [ -z "$parts" ]; then
  if $mini; then parts="dev-clean-2 train-clean-5"
  else parts="dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500"; fi
fi

mkdir -p "$dl_dir"
if [ -n "$corpus_dir" ]; then
  utils/link_corpus.sh "$corpus_dir" "$target"
fi

missing=
for p in $parts; do
  [ -d "$target/$p" ] || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "$0: all parts present in $target ($parts); nothing to download"
  exit 0
fi
if [ -n "$corpus_dir" ]; then
  echo "$0: parts missing in $corpus_dir:$missing" >&2
  exit 1
fi

echo "$0: downloading LibriSpeech into $dl_dir (missing:$missing)"
if $mini; then
  lhotse download librispeech --mini "$dl_dir"
else
  lhotse download librispeech --full "$dl_dir"
fi
for p in $parts; do
  if [ ! -d "$target/$p" ]; then
    echo "$0: $target/$p still missing after the download" >&2
    exit 1
  fi
done
touch "$target/.download.done"
