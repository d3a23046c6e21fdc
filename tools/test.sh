#!/usr/bin/env bash
# Installs what is missing (tools/setup.sh), then runs the test suite.
# Usage: tools/test.sh [--all] [extra pytest args]   (--all also runs tests marked slow)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tools/setup.sh
# shellcheck disable=SC1091
. ./path.sh
marker=(-m "not slow")
if [ "${1:-}" = "--all" ]; then marker=(); shift; fi
exec python -m pytest -q "${marker[@]}" "$@"
