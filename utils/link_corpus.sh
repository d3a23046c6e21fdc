#!/usr/bin/env bash
# Symlink an existing corpus copy into a recipe's download folder: <target> -> absolute <corpus-dir>.
# Usage: utils/link_corpus.sh <corpus-dir> <target>
# Does nothing when <target> already is (or links to) <corpus-dir>; fails when <target> is something else.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "Usage: $0 <corpus-dir> <target>" >&2
  exit 1
fi
src=$1
target=$2
[ -d "$src" ] || { echo "$0: corpus folder $src does not exist" >&2; exit 1; }
abs=$(cd "$src" && pwd)
if [ -e "$target" ] && [ "$(cd "$target" && pwd -P)" != "$(cd "$abs" && pwd -P)" ]; then
  echo "$0: $target exists and is not $src; remove it or drop --corpus-dir" >&2
  exit 1
fi
mkdir -p "$(dirname "$target")"
[ -e "$target" ] || ln -s "$abs" "$target"
echo "$0: using the existing copy $abs as $target"
