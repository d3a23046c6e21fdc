#!/usr/bin/env bash
# Installs everything qnet needs, idempotently: Debian packages (as root), the Python 3.9 venv in
# .venv/ from requirements.txt, and kenlm's lmplz/build_binary in tools/kenlm/bin.
# A second run checks three stamp files and returns in about a second.
#
# Usage: tools/setup.sh [--python PYTHON3.9] [--skip-apt]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=""
skip_apt=false
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python=$2; shift 2 ;;
    --skip-apt) skip_apt=true; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; exit 1 ;;
  esac
done

log() { echo "$(date '+%F %T') setup: $*" >&2; }

# One setup at a time: recipes started together (or parallel jobs) wait here instead of both building.
mkdir -p "$root/tools"
exec 9>"$root/tools/.setup.lock"
flock 9

# espeak-ng, flite and festival (+ two English voices) synthesize egs/mini's corpora (qnet/corpus/synth.py)
apt_packages="espeak-ng flite festival festvox-kdlpc16k festvox-us-slt-hts sox libsox-fmt-all libsndfile1 cmake build-essential
  libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
  zlib1g-dev libbz2-dev liblzma-dev"

# --- Debian packages -------------------------------------------------------------------------
missing=""
for p in $apt_packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if $skip_apt; then
    log "warning: missing Debian packages (--skip-apt given):$missing"
  elif [ "$(id -u)" -eq 0 ]; then
    log "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: missing Debian packages. Run as root:" >&2
    echo "  apt-get update && apt-get install -y$missing" >&2
    exit 1
  fi
fi

# --- Python venv -------------------------------------------------------------------------------
venv=$root/.venv
req_hash=$(sha1sum "$root/requirements.txt" | cut -d' ' -f1)
if [ ! -f "$venv/.done" ] || [ "$(cat "$venv/.done")" != "$req_hash" ]; then
  if [ -z "$python" ]; then
    for cand in python3.9 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python3.9 /usr/bin/python3.9; do
      if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
        python=$cand; break
      fi
    done
  fi
  if [ -z "$python" ]; then
    echo "setup: Python 3.9 not found (k2==1.23.4 on PyPI is a CPython 3.9 wheel); pass --python PATH" >&2
    exit 1
  fi
  log "creating $venv with $python and installing requirements.txt (about 2-3 minutes)"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip wheel >/dev/null
  "$venv/bin/pip" install -q -r "$root/requirements.txt"
  "$venv/bin/python" -c "import k2, lhotse, torch, torchaudio, sentencepiece, kenlm, kaldilm, kaldialign"
  echo "$req_hash" > "$venv/.done"
fi

# --- kenlm binaries ----------------------------------------------------------------------------
kenlm_dir=$root/tools/kenlm
if [ ! -f "$kenlm_dir/.done" ] || [ ! -x "$kenlm_dir/bin/lmplz" ]; then
  log "building kenlm's lmplz and build_binary from the PyPI source distribution (about a minute)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # --no-binary kenlm (not :all:), or pip would build cmake itself from source for the metadata step
  "$venv/bin/pip" download -q --no-deps --no-binary kenlm --no-build-isolation -d "$work" "$(grep -E "^kenlm==" "$root/requirements.txt")"
  tar -xzf "$work"/kenlm-*.tar.gz -C "$work"
  src=$(find "$work" -maxdepth 1 -type d -name 'kenlm-*' | head -n 1)
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >"$work/cmake.log" 2>&1 \
    || { cat "$work/cmake.log" >&2; exit 1; }
  make -C "$work/build" -j "$(nproc)" lmplz build_binary >"$work/make.log" 2>&1 \
    || { tail -n 50 "$work/make.log" >&2; exit 1; }
  mkdir -p "$kenlm_dir/bin"
  cp "$work/build/bin/lmplz" "$work/build/bin/build_binary" "$kenlm_dir/bin/"
  touch "$kenlm_dir/.done"
fi
log "environment ready: . $root/path.sh"
