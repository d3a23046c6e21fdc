#!/usr/bin/env bash
# Installs what is missing (tools/setup.sh), then runs the test suite.
# Usage: tools/test.sh [--all] [extra pytest args]   (--all also runs tests marked slow)
# The default run is CI's: it includes the learning test, kill -9 resume, the decode/feature job tests
# and AMP (bf16 autocast on CPU); "slow" is only for long checks that add nothing essential.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tools/setup.sh
# shellcheck disable=SC1091
. ./path.sh
marker=(-m "not slow")
if [ "${1:-}" = "--all" ]; then marker=(); shift; fi
exec python -m pytest -q "${marker[@]}" "$@"
