#!/usr/bin/env bash
# QuartzNet CTC on LibriSpeech: download, features, lang, LM + HLG, training, averaging, decoding, RESULTS.md.
#
#   ./run.sh                                   # everything, from stage 0
#   ./run.sh --stage 5 --stop-stage 5 --num-gpus 8
#   ./run.sh --corpus-dir /data/LibriSpeech --bpe-size 256
#   ./run.sh --use-commonvoice true --cv-dir /data/cv-corpus-13.0-2023-03-09
#
# Stages (each guarded by a .done marker written only on success, so a rerun skips finished work):
#   0  corpus: download LibriSpeech into $dl_dir (or link --corpus-dir)    local/librispeech_download.sh
#   1  lhotse manifests (+ Common Voice English with --use-commonvoice)    local/librispeech_data_prep.sh
#   2  NeMo log-mel features, train parts 3-fold speed perturbed, all       steps/make_features.sh
#      training cuts combined and shuffled (train-all-shuf)                 (qnet.bin.combine_cuts)
#   3  lang dir: training text + LM vocabulary, characters or --bpe-size    steps/prepare_lang.sh
#   4  LM: openslr ARPAs or lmplz; G (pruned 3-gram) in HLG, 4-gram G       local/librispeech_lm.sh, steps/make_hlg.sh
#      and (--use-nnlm true) the neural LM on the LM text                    steps/train_nnlm.sh
#   5  train QuartzNet --model (torchrun over --num-gpus, or $cuda_cmd)     steps/train.sh
#   6  average the last --avg epochs                                        steps/average.sh
#   7  decode dev/test sets with every --decode-methods                     steps/decode.sh
#   8  $exp_dir/RESULTS.md next to the published numbers                    qnet.bin.make_results
# Everything generated stays under --data-dir (data) and --exp-dir (exp); downloads under --dl-dir.
# The recipe is written to be run from a recipe folder (egs/<name>): egs/mini runs it with mini settings.
set -euo pipefail

stage=0
stop_stage=8
nj=8                # parallel jobs for manifests, features and decoding (through $train_cmd/$decode_cmd)

# Data
dl_dir=download                # corpora and LM downloads
corpus_dir=                    # an existing LibriSpeech copy (the folder with train-clean-100/ ...)
train_parts="train-clean-100 train-clean-360 train-other-500"
dev_parts="dev-clean dev-other"     # the first one is the validation set during training
test_parts="test-clean test-other"
max_utt_duration=16.7          # drop longer training utterances (s), as NeMo
speed_perturb=true             # offline 3-fold (0.9/1.0/1.1) speed perturbation of the train parts
use_commonvoice=false          # add Common Voice English to pretraining
cv_dir=                        # the Common Voice release folder (cv-corpus-*/, holding en/)
cv_lang=en
data_dir=data
exp_dir=exp

# Lang and LM
bpe_size=0                     # 0: characters (<blk> <space> a-z '); N: sentencepiece BPE with N tokens
lm_source=auto                 # auto (openslr when downloadable, else lmplz) | openslr | lmplz
lm_text=                       # LM training text for lmplz (default: openslr's librispeech-lm-norm.txt.gz)
lm_url=https://www.openslr.org/resources/11
lm_vocab_size=200000           # lmplz: vocabulary = the most frequent words of --lm-text
lm_prune_hlg="0 1 1"           # lmplz count pruning of the 3-gram used inside HLG
lm_prune_rescore=""            # lmplz count pruning of the 4-gram used for rescoring

# Model and training
model=15x5                     # a qnet.model config name: 15x5 10x5 5x5 5x3 small mini mini-s3 wide-s3 tiny
num_gpus=1                     # GPUs per node: 0 = CPU, 1, or >1 = torchrun --nproc_per_node
cpu_procs=1                    # with --num-gpus 0: data-parallel CPU processes of one thread (steps/train.sh, train_nnlm.sh)
num_nodes=1                    # >1: inside a SLURM allocation, srun one task per GPU (see docs/RECIPES.md)
num_epochs=400
max_duration=400               # seconds of audio per batch and GPU
lr=0.01
train_opts=""                  # more qnet.bin.train options, e.g. "--warmup-steps 1000 --amp bf16"
init_from=""                   # start from a checkpoint or .nemo (weights only)
avg=5                          # epochs averaged in stage 6
keep_last_epochs=10            # epoch checkpoints kept (>= avg; 0 = all): disk ~ 10 x 150 MB for 15x5

# Decoding
decode_methods="greedy,ctc-decoding,1best,nbest-rescoring,whole-lattice-rescoring"
decode_nj=4
decode_device=cpu              # cpu | cuda
decode_opts=""                 # more steps/decode.sh options, e.g. "--lm-scales 0.5,0.7,0.9"

# Neural LM for nnlm-rescoring (trained in stage 4 on the LM text, --num-gpus GPUs; decoded in stage 7)
use_nnlm=true
nnlm_size=base                 # tiny small base large (qnet/nnlm.py SIZES); base: 6 x 512 Transformer
nnlm_kind=transformer          # transformer | lstm
nnlm_vocab_size=50000          # most frequent words of the LM text; the rest is scored as <unk>
nnlm_epochs=2                  # the LibriSpeech LM text is ~800M words: an epoch is a long GPU job
nnlm_max_tokens=8000           # padded words per batch and GPU
nnlm_lr=0.001
nnlm_opts=""                   # more qnet.bin.train_nnlm options, e.g. "--max-sentences 5000000 --amp bf16"

. utils/recipe_init.sh   # setup, path.sh, cmd.sh, options (every variable above), log

prefix=librispeech
if [ "$bpe_size" -gt 0 ]; then lang_dir=$data_dir/lang_bpe_$bpe_size; else lang_dir=$data_dir/lang_char; fi
manifest_dir=$data_dir/manifests
fbank_dir=$data_dir/fbank
lm_dir=$data_dir/lm
model_dir=$exp_dir/quartznet_${model}_$(basename "$lang_dir")
avg_model=$model_dir/averaged-avg-$avg.pt
nnlm_dir=$exp_dir/nnlm_${nnlm_kind}_$nnlm_size
train_all_cuts=$fbank_dir/${prefix}_cuts_train-all-shuf.jsonl.gz   # all train parts (+ Common Voice), shuffled
dev_sets=($dev_parts)
cv_supervisions=
if $use_commonvoice; then cv_supervisions=$manifest_dir/commonvoice_supervisions_train.jsonl.gz; fi
if [ "$keep_last_epochs" -gt 0 ] && [ "$keep_last_epochs" -lt "$avg" ]; then
  echo "$0: --keep-last-epochs $keep_last_epochs keeps fewer epochs than stage 6 averages (--avg $avg)" >&2
  exit 1
fi
mkdir -p "$data_dir" "$exp_dir"
# decoding on GPUs goes through $cuda_cmd so that the scheduler gives the jobs a GPU
if [ "$decode_device" = cpu ]; then dec_cmd=$decode_cmd; else dec_cmd=$cuda_cmd; fi

log "recipe $0: stages $stage..$stop_stage, data in $data_dir, experiments in $model_dir"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: LibriSpeech in $dl_dir/LibriSpeech${corpus_dir:+ (linked to $corpus_dir)}"
  local/librispeech_download.sh --corpus-dir "$corpus_dir" --parts "$train_parts $dev_parts $test_parts" "$dl_dir"
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: manifests in $manifest_dir"
  local/librispeech_data_prep.sh --nj "$nj" --max-duration "$max_utt_duration" \
    --parts "$train_parts $dev_parts $test_parts" "$dl_dir/LibriSpeech" "$manifest_dir"
  if $use_commonvoice && [ ! -f "$manifest_dir/.commonvoice_train.done" ]; then
    [ -d "$cv_dir" ] || { echo "$0: --use-commonvoice true needs --cv-dir (got '$cv_dir')" >&2; exit 1; }
    mkdir -p "$manifest_dir/log"
    python -m qnet.bin.prepare_commonvoice --language "$cv_lang" --splits train -j "$nj" \
      --max-duration "$max_utt_duration" --log-file "$manifest_dir/log/commonvoice_data_prep.log" \
      "$cv_dir" "$manifest_dir"
    touch "$manifest_dir/.commonvoice_train.done"
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: features in $fbank_dir; training cuts combined and shuffled into $train_all_cuts"
  extra_train_cuts=
  if $use_commonvoice; then
    steps/make_features.sh --cmd "$train_cmd" --nj "$nj" --prefix commonvoice --speed-perturb "$speed_perturb" \
      --parts train "$manifest_dir" "$fbank_dir"
    extra_train_cuts=$fbank_dir/commonvoice_cuts_train.jsonl.gz
  fi
  steps/make_features.sh --cmd "$train_cmd" --nj "$nj" --prefix $prefix --speed-perturb "$speed_perturb" \
    --train-all train-all-shuf --extra-train-cuts "$extra_train_cuts" \
    --parts "$train_parts $dev_parts $test_parts" "$manifest_dir" "$fbank_dir"
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: lang dir $lang_dir (training text + LM vocabulary)"
  local/librispeech_lm.sh --phase text --source "$lm_source" --url "$lm_url" --dl-dir "$dl_dir/lm" \
    --text "$lm_text" --vocab-size "$lm_vocab_size" --parts "$train_parts" \
    --supervisions "$cv_supervisions" \
    "$manifest_dir" "$lm_dir"
  if [ "$bpe_size" -gt 0 ]; then unit=bpe; else unit=char; fi
  steps/prepare_lang.sh --unit $unit --bpe-size "$bpe_size" --words "$lm_dir/vocab.txt" \
    "$lm_dir/train_text.txt" "$lang_dir"
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: LM (G_3_gram for HLG, G_4_gram for rescoring) and HLG"
  local/librispeech_lm.sh --phase lm --source "$lm_source" --url "$lm_url" --dl-dir "$dl_dir/lm" \
    --text "$lm_text" --prune-hlg "$lm_prune_hlg" --prune-rescore "$lm_prune_rescore" \
    --lang-dir "$lang_dir" "$manifest_dir" "$lm_dir"
  steps/make_hlg.sh "$lang_dir" "$lm_dir/G_3_gram.fst.txt"
  if $use_nnlm; then
    log "Stage 4: neural LM ($nnlm_kind $nnlm_size) in $nnlm_dir"
    local/librispeech_lm.sh --phase lm-text --url "$lm_url" --dl-dir "$dl_dir/lm" --text "$lm_text" \
      "$manifest_dir" "$lm_dir"
    steps/train_nnlm.sh --cmd "$cuda_cmd" --num-gpus "$num_gpus" --cpu-procs "$cpu_procs" --model-size "$nnlm_size" --kind "$nnlm_kind" \
      --vocab-size "$nnlm_vocab_size" --num-epochs "$nnlm_epochs" --max-tokens "$nnlm_max_tokens" --lr "$nnlm_lr" \
      --train-opts "$nnlm_opts" "${lm_text:-$dl_dir/lm/librispeech-lm-norm.txt.gz}" "$nnlm_dir"
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: train QuartzNet $model in $model_dir"
  steps/train.sh --cmd "$cuda_cmd" --num-gpus "$num_gpus" --cpu-procs "$cpu_procs" --num-nodes "$num_nodes" --model "$model" --num-epochs "$num_epochs" \
    --max-duration "$max_duration" --lr "$lr" --init-from "$init_from" --train-opts "$train_opts" \
    --keep-last-epochs "$keep_last_epochs" --train-cuts "$train_all_cuts" --valid-cuts "$fbank_dir/${prefix}_cuts_${dev_sets[0]}.jsonl.gz" \
    "$lang_dir" "$model_dir"
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: average the last $avg epochs into $avg_model"
  steps/average.sh --avg "$avg" --out "$avg_model" "$model_dir"
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  nnlm_decode=()
  if $use_nnlm; then
    [[ ,$decode_methods, == *,nnlm-rescoring,* ]] || decode_methods=$decode_methods,nnlm-rescoring
    nnlm_decode=(--nnlm "$nnlm_dir/nnlm.pt")
  fi
  log "Stage 7: decode $dev_parts $test_parts ($decode_methods)"
  for part in $dev_parts $test_parts; do
    dir=$model_dir/decode_$part
    # steps/decode.sh keeps its own markers: it decodes only the methods $dir lacks
    # shellcheck disable=SC2086
    steps/decode.sh --cmd "$dec_cmd" --nj "$decode_nj" --device "$decode_device" \
      --methods "$decode_methods" --test-set "$part" --G-rescore "$lm_dir/G_4_gram.fst.txt" "${nnlm_decode[@]}" \
      $decode_opts "$avg_model" "$fbank_dir/${prefix}_cuts_$part.jsonl.gz" "$lang_dir" "$dir"
  done
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: $exp_dir/RESULTS.md"
  tune=()
  for part in $test_parts; do tune+=(--tune "$part=${part/test/dev}"); done
  python -m qnet.bin.make_results --out "$exp_dir/RESULTS.md" --title "QuartzNet on LibriSpeech" \
    --published librispeech --sets $dev_parts $test_parts "${tune[@]}" --print true \
    "$model=$model_dir"
fi
log "done (stages $stage..$stop_stage)"
