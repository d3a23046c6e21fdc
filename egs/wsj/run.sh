#!/usr/bin/env bash
# QuartzNet CTC on WSJ (si284): fine-tune a LibriSpeech-pretrained QuartzNet, and train the paper's
# from-scratch 5x3 baseline; decode dev93 and eval92; RESULTS.md.
#
#   ./run.sh --wsj0 /data/LDC93S6B --wsj1 /data/LDC94S13B \
#            --pretrained ../librispeech/exp/quartznet_15x5_lang_char/averaged-avg-5.pt
#   ./run.sh --wsj0 ... --wsj1 ... --pretrained QuartzNet15x5Base-En.nemo --lm-ldc true
#   ./run.sh --wsj0 ... --wsj1 ... --bpe-size 256 \
#            --pretrained ../librispeech/exp/quartznet_15x5_lang_bpe_256/averaged-avg-5.pt
#
# Stages (each guarded by a .done marker written only on success, so a rerun skips finished work):
#   0  manifests, LM text and LDC ARPAs from the LDC discs                  local/wsj_data_prep.sh
#   1  NeMo log-mel features, train set 3-fold speed perturbed and shuffled steps/make_features.sh
#   2  lang dir (characters, or --bpe-size N): training text + LM vocabulary local/wsj_lm.sh, steps/prepare_lang.sh
#   3  LM: lmplz on WSJ's LM text (or --lm-ldc true: the LDC ARPAs); HLG    local/wsj_lm.sh, steps/make_hlg.sh
#      and (--use-nnlm true) the neural LM on WSJ's LM text                 steps/train_nnlm.sh
#   4  fine-tune --pretrained (a qnet checkpoint or a .nemo) on si284       steps/train.sh --init-from
#   5  train --scratch-model (5x3) from scratch on si284                    steps/train.sh
#   6  average the last --avg epochs of both                               steps/average.sh
#   7  decode dev93 and eval92 with every --decode-methods, both models     steps/decode.sh
#   8  $exp_dir/RESULTS.md next to the published numbers                    qnet.bin.make_results
# --finetune false / --scratch false leave one of the two systems out.
set -euo pipefail

stage=0
stop_stage=8
nj=8                # parallel jobs for features and decoding

# Data
wsj0=                          # LDC93S6B: the folder with the 11-*.* discs (or a flattened wsj0 copy)
wsj1=                          # LDC94S13B: the folder with the 13-*.* discs (or a flattened wsj1 copy)
train_set=train_si284
dev_set=test_dev93             # validation set during training; LM scales are tuned on it
test_set=test_eval92
max_utt_duration=16.7
speed_perturb=true
data_dir=data
exp_dir=exp

# Lang and LM
bpe_size=0                     # 0: characters (<blk> <space> a-z '); N: sentencepiece BPE with N tokens
                               # (fine-tuning a char --pretrained model on BPE re-initializes its decoder)
lm_ldc=false                   # true: the LDC 20k trigram (tcb20onp) inside HLG instead of lmplz
lm_vocab_size=100000           # lmplz: most frequent words of the WSJ LM text
lm_prune_hlg="0 1 1"
lm_prune_rescore=""

# Training: shared options, then the two systems
num_gpus=1                     # GPUs per node: 0 = CPU, 1, or >1 = torchrun --nproc_per_node
cpu_procs=1                    # with --num-gpus 0: data-parallel CPU processes of one thread (steps/train.sh, train_nnlm.sh)
num_nodes=1                    # >1: inside a SLURM allocation, srun one task per GPU (see docs/RECIPES.md)
max_duration=400
train_opts=""                  # more qnet.bin.train options for both systems
avg=5
keep_last_epochs=10            # epoch checkpoints kept per system (>= avg; 0 = all)
finetune=true
pretrained=../librispeech/exp/quartznet_15x5_lang_char/averaged-avg-5.pt   # qnet checkpoint or .nemo
finetune_epochs=100
finetune_lr=0.002
scratch=true
scratch_model=5x3
scratch_epochs=400
scratch_lr=0.01

# Decoding
decode_methods="greedy,ctc-decoding,1best,nbest-rescoring,whole-lattice-rescoring"
decode_nj=4
decode_device=cpu
decode_opts=""

# Neural LM for nnlm-rescoring (trained in stage 3 on WSJ's LM text, ~37M words; decoded in stage 7)
use_nnlm=true
nnlm_size=small                # tiny small base large (qnet/nnlm.py SIZES); small: 4 x 256 Transformer
nnlm_kind=transformer          # transformer | lstm
nnlm_vocab_size=50000          # most frequent words of the LM text; the rest is scored as <unk>
nnlm_epochs=5
nnlm_max_tokens=8000           # padded words per batch and GPU
nnlm_lr=0.001
nnlm_opts=""                   # more qnet.bin.train_nnlm options, e.g. "--amp bf16"

. utils/recipe_init.sh   # setup, path.sh, cmd.sh, options (every variable above), log

prefix=wsj
manifest_dir=$data_dir/manifests
fbank_dir=$data_dir/fbank
if [ "$bpe_size" -gt 0 ]; then lang_dir=$data_dir/lang_bpe_$bpe_size; else lang_dir=$data_dir/lang_char; fi
lm_dir=$data_dir/lm
nnlm_dir=$exp_dir/nnlm_${nnlm_kind}_$nnlm_size
# BPE systems get their own experiment folders (char ones keep the plain names)
if [ "$bpe_size" -gt 0 ]; then unit_suffix=_bpe_$bpe_size; else unit_suffix=; fi
ft_dir=$exp_dir/quartznet_finetuned$unit_suffix
scratch_dir=$exp_dir/quartznet_${scratch_model}_scratch$unit_suffix
systems=()
if $finetune; then systems+=("$ft_dir"); fi
if $scratch; then systems+=("$scratch_dir"); fi
mkdir -p "$data_dir" "$exp_dir"
# decoding on GPUs goes through $cuda_cmd so that the scheduler gives the jobs a GPU
if [ "$decode_device" = cpu ]; then dec_cmd=$decode_cmd; else dec_cmd=$cuda_cmd; fi

log "recipe $0: stages $stage..$stop_stage, data in $data_dir, experiments in $exp_dir"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: WSJ manifests from $wsj0 and $wsj1"
  if [ -z "$wsj0" ] || [ -z "$wsj1" ]; then
    echo "$0: stage 0 reads the LDC discs: give --wsj0 DIR (LDC93S6B) and --wsj1 DIR (LDC94S13B)" >&2
    exit 1
  fi
  local/wsj_data_prep.sh --sets "$train_set $dev_set $test_set" --max-duration "$max_utt_duration" \
    --wsj0 "$wsj0" --wsj1 "$wsj1" "$manifest_dir"
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: features in $fbank_dir"
  steps/make_features.sh --cmd "$train_cmd" --nj "$nj" --prefix $prefix --speed-perturb "$speed_perturb" \
    --train-all "$train_set-shuf" --parts "$train_set $dev_set $test_set" "$manifest_dir" "$fbank_dir"
fi

lm_opts=(--train-set "$train_set" --vocab-size "$lm_vocab_size" --prune-hlg "$lm_prune_hlg"
         --prune-rescore "$lm_prune_rescore" --ldc "$lm_ldc")

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: lang dir $lang_dir"
  local/wsj_lm.sh --phase text "${lm_opts[@]}" "$manifest_dir" "$lm_dir"
  if [ "$bpe_size" -gt 0 ]; then unit=bpe; else unit=char; fi
  steps/prepare_lang.sh --unit $unit --bpe-size "$bpe_size" --words "$lm_dir/vocab.txt" \
    "$lm_dir/train_text.txt" "$lang_dir"
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: LM (G_3_gram in HLG, G_4_gram for rescoring) and HLG"
  local/wsj_lm.sh --phase lm "${lm_opts[@]}" --lang-dir "$lang_dir" "$manifest_dir" "$lm_dir"
  steps/make_hlg.sh "$lang_dir" "$lm_dir/G_3_gram.fst.txt"
  if $use_nnlm; then
    log "Stage 3: neural LM ($nnlm_kind $nnlm_size) in $nnlm_dir"
    steps/train_nnlm.sh --cmd "$cuda_cmd" --num-gpus "$num_gpus" --cpu-procs "$cpu_procs" --model-size "$nnlm_size" --kind "$nnlm_kind" \
      --vocab-size "$nnlm_vocab_size" --num-epochs "$nnlm_epochs" --max-tokens "$nnlm_max_tokens" --lr "$nnlm_lr" \
      --train-opts "$nnlm_opts" "$manifest_dir/wsj_lm_text.txt" "$nnlm_dir"
  fi
fi

data_opts=(--train-cuts "$fbank_dir/${prefix}_cuts_$train_set-shuf.jsonl.gz" --keep-last-epochs "$keep_last_epochs"
           --valid-cuts "$fbank_dir/${prefix}_cuts_$dev_set.jsonl.gz")

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ] && $finetune; then
  log "Stage 4: fine-tune $pretrained in $ft_dir"
  [ -f "$pretrained" ] || { echo "$0: --pretrained $pretrained does not exist (train egs/librispeech, or give a .nemo)" >&2; exit 1; }
  steps/train.sh --cmd "$cuda_cmd" --num-gpus "$num_gpus" --cpu-procs "$cpu_procs" --num-nodes "$num_nodes" --init-from "$pretrained" \
    --num-epochs "$finetune_epochs" --lr "$finetune_lr" --max-duration "$max_duration" \
    --train-opts "$train_opts" "${data_opts[@]}" "$lang_dir" "$ft_dir"
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ] && $scratch; then
  log "Stage 5: train $scratch_model from scratch in $scratch_dir"
  steps/train.sh --cmd "$cuda_cmd" --num-gpus "$num_gpus" --cpu-procs "$cpu_procs" --num-nodes "$num_nodes" --model "$scratch_model" \
    --num-epochs "$scratch_epochs" --lr "$scratch_lr" --max-duration "$max_duration" \
    --train-opts "$train_opts" "${data_opts[@]}" "$lang_dir" "$scratch_dir"
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  for dir in "${systems[@]}"; do
    log "Stage 6: average the last $avg epochs of $dir"
    steps/average.sh --avg "$avg" --out "$dir/averaged-avg-$avg.pt" "$dir"
  done
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  nnlm_decode=()
  if $use_nnlm; then
    [[ ,$decode_methods, == *,nnlm-rescoring,* ]] || decode_methods=$decode_methods,nnlm-rescoring
    nnlm_decode=(--nnlm "$nnlm_dir/nnlm.pt")
  fi
  for dir in "${systems[@]}"; do
    for part in $dev_set $test_set; do
      log "Stage 7: decode $part with $dir ($decode_methods)"
      # shellcheck disable=SC2086
      steps/decode.sh --cmd "$dec_cmd" --nj "$decode_nj" --device "$decode_device" \
        --methods "$decode_methods" --test-set "$part" --G-rescore "$lm_dir/G_4_gram.fst.txt" "${nnlm_decode[@]}" $decode_opts \
        "$dir/averaged-avg-$avg.pt" "$fbank_dir/${prefix}_cuts_$part.jsonl.gz" "$lang_dir" "$dir/decode_$part"
    done
  done
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: $exp_dir/RESULTS.md"
  named=()
  if $finetune; then named+=("finetuned=$ft_dir"); fi
  if $scratch; then named+=("${scratch_model}-scratch=$scratch_dir"); fi
  python -m qnet.bin.make_results --out "$exp_dir/RESULTS.md" --title "QuartzNet on WSJ" \
    --published wsj --sets $dev_set $test_set --tune "$test_set=$dev_set" --print true "${named[@]}"
fi
log "done (stages $stage..$stop_stage)"
