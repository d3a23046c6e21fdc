#!/usr/bin/env bash
# Compute NeMo log-mel features (lilcom archives) for lhotse manifests, split into --nj jobs.
#
# Usage: steps/make_features.sh [options] <manifest-dir> <feature-dir>
#   e.g. steps/make_features.sh --cmd "$train_cmd" --nj 8 --prefix librispeech \
#          --parts "train-clean-100 dev-clean" --speed-perturb true data/manifests data/fbank
#
# For each part: split the cuts into nj pieces (CutSet.split), run
#   $cmd JOB=1:nj <feature-dir>/log/feats_<prefix>_<part>.JOB.log \
#     python -m qnet.bin.compute_features ... --job JOB --nj nj
# then combine the pieces into <feature-dir>/<prefix>_cuts_<part>.jsonl.gz and touch
# <feature-dir>/.<prefix>_<part>.features.done. Parts with a .done marker are skipped; a failed
# job leaves no marker, and a rerun only recomputes the pieces that did not finish.
#
# --train-all NAME: then combine the cuts of the train* parts among --parts (each with its speed-perturbed
# copies) and the --extra-train-cuts files into one shuffled <feature-dir>/<prefix>_cuts_NAME.jsonl.gz
# (qnet.bin.combine_cuts, bounded memory), the file training reads: a part or a perturbation factor
# written as one block would otherwise fill whole stretches of the sampler's shuffle buffer. Its marker
# <feature-dir>/.<prefix>_NAME.combine.done lists the inputs; other inputs combine again.
set -euo pipefail

cmd=run.pl
nj=4
prefix=librispeech
parts=
speed_perturb=false   # 3-fold speed perturbation (0.9/1.0/1.1) of train* parts
dither=1e-5           # dither of train* parts; other parts get 0
feature_type=nemo-mel
train_all=            # e.g. train-all-shuf: the combined, shuffled training cuts (see above)
extra_train_cuts=     # more cut files for --train-all, e.g. another corpus's
seed=0                # shuffle seed of --train-all

echo "$0 $*"
. utils/parse_options.sh

if [ $# -ne 2 ] || [ -z "$parts" ]; then
  echo "Usage: $0 [--cmd run.pl] [--nj 4] [--prefix librispeech] --parts \"p1 p2\" [--speed-perturb true]" >&2
  echo "          [--dither 1e-5] [--feature-type nemo-mel|fbank] [--train-all NAME [--extra-train-cuts \"F ...\"]]" >&2
  echo "          <manifest-dir> <feature-dir>" >&2
  exit 1
fi
src_dir=$1
out_dir=$2
mkdir -p "$out_dir/log"

common=(--src-dir "$src_dir" --prefix "$prefix" --out-dir "$out_dir" --speed-perturb "$speed_perturb"
        --dither "$dither" --feature-type "$feature_type" --nj "$nj")

for part in $parts; do
  done_marker=$out_dir/.${prefix}_${part}.features.done
  if [ -f "$done_marker" ]; then
    echo "$0: $part: features done ($done_marker), skipping"
    continue
  fi
  start=$(date +%s)
  python -m qnet.bin.compute_features "${common[@]}" --parts "$part" --split \
    --log-file "$out_dir/log/split_${prefix}_${part}.log"
  $cmd JOB=1:$nj "$out_dir/log/feats_${prefix}_${part}.JOB.log" \
    python -m qnet.bin.compute_features "${common[@]}" --parts "$part" --job JOB
  python -m qnet.bin.compute_features "${common[@]}" --parts "$part" --combine \
    --log-file "$out_dir/log/combine_${prefix}_${part}.log"
  touch "$done_marker"
  echo "$0: $part: features in $out_dir/${prefix}_cuts_${part}.jsonl.gz ($(( $(date +%s) - start )) s)"
done

if [ -n "$train_all" ]; then
  combined=$out_dir/${prefix}_cuts_$train_all.jsonl.gz
  inputs=()
  for part in $parts; do
    case $part in train*) inputs+=("$out_dir/${prefix}_cuts_$part.jsonl.gz");; esac
  done
  # shellcheck disable=SC2206
  inputs+=($extra_train_cuts)
  [ ${#inputs[@]} -gt 0 ] || { echo "$0: --train-all $train_all: no train* part in --parts and no --extra-train-cuts" >&2; exit 1; }
  marker=$out_dir/.${prefix}_$train_all.combine.done
  wanted="seed=$seed inputs=${inputs[*]}"
  if [ -f "$marker" ] && [ -f "$combined" ] && [ "$(cat "$marker")" = "$wanted" ]; then
    echo "$0: $combined is up to date ($marker), skipping"
  else
    rm -f "$marker"
    python -m qnet.bin.combine_cuts --shuffle true --seed "$seed" \
      --log-file "$out_dir/log/combine_${prefix}_$train_all.log" "$combined" "${inputs[@]}"
    echo "$wanted" > "$marker"
    echo "$0: training cuts of ${#inputs[@]} files combined and shuffled into $combined"
  fi
fi
