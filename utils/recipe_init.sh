# Sourced by every egs/<name>/run.sh after its option variables are declared: installs what is missing,
# sets up the environment and job commands, parses the options, and defines `log`.
# The recipe's help lists every variable from `stage=` up to the line sourcing this file, as --options.
# shellcheck disable=SC2034
help_message="Usage: $0 [--name value] ...   the options and their defaults:
$(awk '/recipe_init\.sh/ {exit} /^stage=/ {f = 1} f && match($0, /^[a-z0-9_]+=/) {
  n = substr($0, 1, RLENGTH - 1); gsub("_", "-", n); print "  --" n " " substr($0, RLENGTH + 1)}' "$0")"

log() {
  # date, the calling line and the message (as icefall/ESPnet recipes do)
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') ($fname:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# stage_done N START WHAT: add the wall time of stage N (WHAT), started at epoch second START, to $times
# ("<stage> <seconds> <what>" lines, one per stage; RESULTS.md lists them). Times are summed over
# invocations, so an interrupted and resumed stage counts both parts and a rerun that skips it adds ~0 s.
stage_done() {
  local before
  before=$(awk -v s="$1" '$1 == s {print $2}' "$times" 2>/dev/null || true)
  local line="$1 $(( ${before:-0} + $(date +%s) - $2 )) $3"
  { grep -v "^$1 " "$times" 2>/dev/null || true; echo "$line"; } | sort -n > "$times.tmp"
  mv "$times.tmp" "$times"
}

../../tools/setup.sh
. ./path.sh
. ./cmd.sh
. utils/parse_options.sh

if [ $# -ne 0 ]; then
  echo "$help_message" >&2
  exit 1
fi
