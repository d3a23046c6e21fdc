#!/usr/bin/env bash
# Train the word-level neural LM for nnlm-rescoring (python -m qnet.bin.train_nnlm), Kaldi style.
#
# Usage: steps/train_nnlm.sh [options] <lm-text> <exp-dir>
#   e.g. steps/train_nnlm.sh --cmd "$cuda_cmd" --num-gpus 4 --model-size base --vocab-size 200000 \
#          --num-epochs 3 download/lm/librispeech-lm-norm.txt.gz exp/nnlm
#
# Options:
#   --cmd run.pl          job dispatcher ($cuda_cmd from cmd.sh); gets --gpu N when --num-gpus > 0
#   --num-gpus 1          0 = CPU, 1 = one GPU, >1 = torchrun --nproc_per_node N (DDP)
#   --cpu-procs 1         with --num-gpus 0: N data-parallel CPU processes (torchrun, gloo), one thread each
#   --model-size base     tiny, small, base, large (qnet/nnlm.py SIZES); --kind transformer|lstm
#   --vocab-size 0        most frequent words of the text kept (0: all)
#   --num-epochs, --max-tokens, --lr       the usual qnet.bin.train_nnlm options
#   --train-opts "..."    more qnet.bin.train_nnlm options, e.g. "--max-sentences 5000000 --amp bf16"
#
# Writes <exp-dir>/nnlm.pt (the epoch with the lowest held-out perplexity), logs to
# <exp-dir>/log/train_nnlm.log. Rerunning the same command after a kill resumes; <exp-dir>/.done is
# written only after training finished, and a finished <exp-dir> is skipped.
set -euo pipefail

cmd=run.pl
num_gpus=1
cpu_procs=1
model_size=base
kind=transformer
vocab_size=0
num_epochs=10
max_tokens=8000
lr=0.001
train_opts=
help_message="Usage: $0 [--cmd run.pl] [--num-gpus 1] [--cpu-procs 1] [--model-size base] [--kind transformer|lstm]
  [--vocab-size 0] [--num-epochs 10] [--max-tokens 8000] [--lr 0.001] [--train-opts \"...\"] <lm-text> <exp-dir>"

echo "$0 $*"
. utils/parse_options.sh

if [ $# -ne 2 ]; then
  echo "$help_message" >&2
  exit 1
fi
text=$1
exp_dir=$2
[ -f "$text" ] || { echo "$0: LM text $text is missing" >&2; exit 1; }
if [ -f "$exp_dir/.done" ]; then
  echo "$0: $exp_dir is already trained ($exp_dir/.done); remove that file to train again"
  exit 0
fi
mkdir -p "$exp_dir/log"

args=(--text "$text" --exp-dir "$exp_dir" --model-size "$model_size" --kind "$kind" --vocab-size "$vocab_size"
      --num-epochs "$num_epochs" --max-tokens "$max_tokens" --lr "$lr")
# shellcheck disable=SC2206
args+=($train_opts)
if [ "$num_gpus" -eq 0 ] && [ "$cpu_procs" -gt 1 ]; then
  # the last --num-threads wins: one thread per process
  args+=(--device cpu --num-threads 1)
  launcher=(utils/torchrun_local.sh "$cpu_procs" -m qnet.bin.train_nnlm)
  gpu_opt=()
elif [ "$num_gpus" -eq 0 ]; then
  args+=(--device cpu)
  launcher=(python -m qnet.bin.train_nnlm)
  gpu_opt=()
elif [ "$num_gpus" -gt 1 ]; then
  launcher=(utils/torchrun_local.sh "$num_gpus" -m qnet.bin.train_nnlm)
  gpu_opt=(--gpu "$num_gpus")
else
  launcher=(python -m qnet.bin.train_nnlm)
  gpu_opt=(--gpu 1)
fi

start=$(date +%s)
$cmd "${gpu_opt[@]}" "$exp_dir/log/train_nnlm.log" "${launcher[@]}" "${args[@]}"
[ -f "$exp_dir/nnlm.pt" ] || { echo "$0: training ended without $exp_dir/nnlm.pt" >&2; exit 1; }
touch "$exp_dir/.done"
echo "$0: trained $exp_dir in $(( $(date +%s) - start )) s (log: $exp_dir/log/train_nnlm.log)"
