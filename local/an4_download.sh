#!/usr/bin/env bash
# Get CMU AN4 (an4_sphere layout) into <dl-dir>/an4, unless it is already there.
#
# Usage: local/an4_download.sh [--corpus-dir DIR] <dl-dir>
#   --corpus-dir DIR  an existing copy (the folder holding etc/ and wav/): symlinked as <dl-dir>/an4,
#                     nothing is downloaded.
# Otherwise `python -m qnet.bin.download_an4` fetches an4_sphere.tar.gz (CMU's address, NeMo's public
# mirror as fallback), verifies and unpacks it, then writes <dl-dir>/an4/.download.done.
set -euo pipefail

corpus_dir=

echo "$0 $*"
. utils/parse_options.sh

if [ $# -ne 1 ]; then
  echo "Usage: $0 [--corpus-dir DIR] <dl-dir>" >&2
  exit 1
fi
dl_dir=$1
target=$dl_dir/an4
mkdir -p "$dl_dir"

if [ -n "$corpus_dir" ]; then
  [ -f "$corpus_dir/etc/an4_train.fileids" ] && [ -d "$corpus_dir/wav" ] || {
    echo "$0: --corpus-dir $corpus_dir is not AN4 (expected etc/an4_train.fileids and wav/, as in an4_sphere.tar.gz)" >&2
    exit 1
  }
  utils/link_corpus.sh "$corpus_dir" "$target"
  exit 0
fi

if [ -f "$target/.download.done" ]; then
  echo "$0: $target is complete ($target/.download.done); nothing to download"
  exit 0
fi
mkdir -p "$dl_dir/log"
python -m qnet.bin.download_an4 --log-file "$dl_dir/log/download_an4.log" "$dl_dir"
touch "$target/.download.done"
