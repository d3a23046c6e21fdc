#!/usr/bin/env bash
# Train a QuartzNet CTC model (python -m qnet.bin.train) through the job dispatcher, Kaldi style.
#
# Usage: steps/train.sh [options] <lang-dir> <exp-dir> [-- <more qnet.bin.train options>]
#   e.g. steps/train.sh --cmd "$cuda_cmd" --num-gpus 4 --model 15x5 --num-epochs 400 --max-duration 300 \
#          --train-cuts "data/fbank/librispeech_cuts_train-clean-100.jsonl.gz data/fbank/librispeech_cuts_train-other-500.jsonl.gz" \
#          --valid-cuts data/fbank/librispeech_cuts_dev-clean.jsonl.gz data/lang_char exp/quartznet_15x5 -- --amp bf16
#
# Options:
#   --cmd run.pl          job dispatcher ($cuda_cmd from cmd.sh); gets --gpu N when --num-gpus > 0
#   --num-gpus 1          GPUs per node: 0 = CPU, 1 = one GPU, >1 = torchrun --nproc_per_node N (DDP)
#   --cpu-procs 1         with --num-gpus 0: N data-parallel CPU processes (torchrun, gloo), one thread each.
#                         Small models use threads poorly: on 2 cores, 2 processes of 1 thread trained the
#                         mini models 2.2x faster than 1 process of 2 threads (bench/README.md). The batch
#                         is then N x --max-duration.
#   --num-nodes 1         >1 only inside a SLURM allocation (srun, one task per GPU); to submit a
#                         multi-node job use conf/train_multinode.sbatch instead
#   --model NAME          15x5, 10x5, 5x5, 5x3, small, mini, mini-s3, wide-s3, tiny (empty: the --init-from checkpoint's)
#   --num-epochs, --max-duration, --lr      the usual qnet.bin.train options
#   --init-from CKPT      fine-tune from a qnet checkpoint or a .nemo (weights only)
#   --train-cuts "F ..."  training manifests (space-separated); --valid-cuts F
#   --train-opts "..."    more qnet.bin.train options (also accepted after a `--`)
#   --keep-last-epochs 10 keep the newest N epoch-E.pt (0 = every epoch). Disk: N x the checkpoint size
#                         (model + NovoGrad state: ~150 MB for 15x5, ~50 MB for 5x3), plus the
#                         --keep-last-k (3) mid-epoch checkpoint-STEP.pt; must be >= the epochs averaged later.
#
# Logs to <exp-dir>/log/train.log (the Python logger also writes <exp-dir>/log/log-train-<date>.txt).
# Rerunning the same command after a crash or kill resumes from the newest checkpoint in <exp-dir>;
# <exp-dir>/.done is written only after training finished, and a finished <exp-dir> is skipped.
set -euo pipefail

cmd=run.pl
num_gpus=1
cpu_procs=1
num_nodes=1
model=
num_epochs=
max_duration=
lr=
init_from=
train_cuts=
valid_cuts=
train_opts=
keep_last_epochs=10
help_message="Usage: $0 [--cmd run.pl] [--num-gpus 1] [--cpu-procs 1] [--num-nodes 1] [--model NAME] [--num-epochs N]
  [--max-duration S] [--lr LR] [--init-from CKPT] --train-cuts \"F ...\" [--valid-cuts F]
  [--train-opts \"...\"] [--keep-last-epochs 10] <lang-dir> <exp-dir> [-- <more qnet.bin.train options>]"

echo "$0 $*"
. utils/parse_options.sh

if [ $# -lt 2 ] || { [ $# -gt 2 ] && [ "$3" != "--" ]; }; then
  echo "$help_message" >&2
  exit 1
fi
lang_dir=$1
exp_dir=$2
shift 2
[ $# -gt 0 ] && shift  # the `--`
extra=("$@")

if [ -z "$train_cuts" ]; then
  echo "$0: --train-cuts is required" >&2
  exit 1
fi
for f in "$lang_dir/tokens.txt" $train_cuts $valid_cuts ${init_from:+"$init_from"}; do
  [ -f "$f" ] || { echo "$0: $f is missing" >&2; exit 1; }
done
if [ -f "$exp_dir/.done" ]; then
  echo "$0: $exp_dir is already trained ($exp_dir/.done); remove that file to train again"
  exit 0
fi
mkdir -p "$exp_dir/log"

args=(--lang-dir "$lang_dir" --exp-dir "$exp_dir")
# shellcheck disable=SC2206
args+=(--train-cuts $train_cuts)
[ -n "$valid_cuts" ] && args+=(--valid-cuts $valid_cuts)
[ -n "$model" ] && args+=(--model "$model")
[ -n "$num_epochs" ] && args+=(--num-epochs "$num_epochs")
[ -n "$max_duration" ] && args+=(--max-duration "$max_duration")
[ -n "$lr" ] && args+=(--lr "$lr")
[ -n "$init_from" ] && args+=(--init-from "$init_from")
args+=(--keep-last-epochs "$keep_last_epochs")
# shellcheck disable=SC2206
args+=($train_opts "${extra[@]}")

if [ "$num_gpus" -eq 0 ] && [ "$cpu_procs" -gt 1 ]; then
  # the last --num-threads wins: one thread per process
  args+=(--device cpu --num-threads 1)
  launcher=(utils/torchrun_local.sh "$cpu_procs" -m qnet.bin.train)
  gpu_opt=()
elif [ "$num_gpus" -eq 0 ]; then
  args+=(--device cpu)
  launcher=(python -m qnet.bin.train)
  gpu_opt=()
elif [ "$num_nodes" -gt 1 ]; then
  if [ -z "${SLURM_JOB_ID:-}" ]; then
    echo "$0: --num-nodes $num_nodes needs a SLURM allocation; submit conf/train_multinode.sbatch instead" >&2
    exit 1
  fi
  # One task per GPU; qnet.bin.train reads SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID itself.
  launcher=(srun --nodes "$num_nodes" --ntasks-per-node "$num_gpus" --kill-on-bad-exit=1 python -m qnet.bin.train)
  gpu_opt=()
  cmd=run.pl  # already inside the allocation
elif [ "$num_gpus" -gt 1 ]; then
  launcher=(utils/torchrun_local.sh "$num_gpus" -m qnet.bin.train)
  gpu_opt=(--gpu "$num_gpus")
else
  launcher=(python -m qnet.bin.train)
  gpu_opt=(--gpu 1)
fi

start=$(date +%s)
# shellcheck disable=SC2086
$cmd "${gpu_opt[@]}" "$exp_dir/log/train.log" "${launcher[@]}" "${args[@]}"
touch "$exp_dir/.done"
echo "$0: trained $exp_dir in $(( $(date +%s) - start )) s (log: $exp_dir/log/train.log)"
