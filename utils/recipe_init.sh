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

# stage_done N START WHAT: record that stage N (WHAT), started at epoch second START, finished, in
# $times ("<stage> <seconds> <what>" lines, one per stage, the last run of each; RESULTS.md lists them).
stage_done() {
  local line="$1 $(( $(date +%s) - $2 )) $3"
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
