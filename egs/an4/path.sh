# Recipe environment (sourced by run.sh as `. ./path.sh`): the repository's venv, kenlm binaries,
# utils/ and steps/ on PATH, qnet on PYTHONPATH. Run ../../tools/setup.sh first if .venv is missing.
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/../../path.sh"
