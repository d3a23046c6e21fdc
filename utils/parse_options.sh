#!/usr/bin/env bash
# parse_options.sh: Kaldi-style option parsing for recipe scripts (qnet's own implementation).
#
# Source it after declaring every option variable with its default:
#
#   stage=0
#   cmd=run.pl
#   use_gpu=false
#   help_message="Usage: $0 [options] <data-dir> <exp-dir>"
#   . utils/parse_options.sh
#   if [ $# -ne 2 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi
#
# - `--foo-bar V` sets foo_bar=V (dashes become underscores); foo_bar must already be defined,
#   else "invalid option". Values with spaces work: --cmd "queue.pl --mem 4G".
# - A variable whose current value is true or false only takes true or false.
# - Every `--config FILE` (shell `name=value` lines) is sourced first, so options given on the
#   command line override it.
# - `--help` / `-h` prints $help_message and exits 0. `--name=value` is an error.
# - Parsing stops at the first argument that is not an option (or after `--`); the positional
#   arguments stay in "$@".
# - An empty value for --cmd is an error (usually an unset $train_cmd).
# Errors go to stderr and exit the calling script with status 1. Works under `set -euo pipefail`;
# its own variables start with __po_ and are unset at the end.

# Pass 1: source the --config files found among the options, in order.
__po_n=$#
__po_i=1
while [ "$__po_i" -le "$__po_n" ]; do
  __po_arg=${!__po_i}
  case $__po_arg in
    -h | --help) __po_i=$((__po_i + 1)) ;;
    --config)
      if [ "$__po_i" -ge "$__po_n" ]; then
        echo "$0: option --config needs a value" >&2
        exit 1
      fi
      __po_j=$((__po_i + 1))
      __po_file=${!__po_j}
      if [ ! -f "$__po_file" ] || [ ! -r "$__po_file" ]; then
        echo "$0: cannot read the config file '$__po_file' given with --config" >&2
        exit 1
      fi
      # shellcheck disable=SC1090
      . "$__po_file"
      __po_i=$((__po_i + 2)) ;;
    --) break ;;
    --*) __po_i=$((__po_i + 2)) ;;
    *) break ;;
  esac
done

# Pass 2: the options, left to right.
__po_cmd_given=false
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help)
      printf '%s\n' "${help_message:-$0: no help message is available}"
      exit 0 ;;
    --)
      shift
      break ;;
    --*=*)
      echo "$0: options must be given as '--name value', not '$1'" >&2
      exit 1 ;;
    --*)
      __po_name=${1#--}
      __po_name=${__po_name//-/_}
      if ! [[ $__po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [[ $__po_name == __po_* ]]; then
        echo "$0: invalid option $1" >&2
        exit 1
      fi
      if [ $# -lt 2 ]; then
        echo "$0: option $1 needs a value" >&2
        exit 1
      fi
      if [ "$__po_name" = config ] && [ -z "${config+x}" ]; then
        shift 2  # already sourced in pass 1
        continue
      fi
      if [ -z "${!__po_name+x}" ]; then
        echo "$0: invalid option $1 (this script has no variable '$__po_name')" >&2
        exit 1
      fi
      __po_old=${!__po_name}
      if [ "$__po_old" = true ] || [ "$__po_old" = false ]; then
        if [ "$2" != true ] && [ "$2" != false ]; then
          echo "$0: option $1 takes true or false, got '$2'" >&2
          exit 1
        fi
      fi
      printf -v "$__po_name" '%s' "$2"
      if [ "$__po_name" = cmd ]; then __po_cmd_given=true; fi
      shift 2 ;;
    *) break ;;
  esac
done

if $__po_cmd_given && [ -z "$cmd" ]; then
  echo "$0: empty argument to the --cmd option" >&2
  exit 1
fi

unset __po_n __po_i __po_j __po_arg __po_file __po_name __po_old __po_cmd_given
true
