#!/usr/bin/env bash
# QuartzNet CTC on CMU AN4 (real speech, ~50 min; trains on a CPU): a model trained from scratch and the
# same model fine-tuned from a pretrained checkpoint (default: egs/mini's synthetic-speech model),
# with the same budget; decoding with every method; RESULTS.md next to ESPnet's published AN4 numbers
# (NeMo's AN4 tutorials publish none; qnet/results.py says so).
#
#   ./run.sh --corpus-dir ../../../shared/data/an4     # an existing copy (the folder holding etc/ and wav/)
#   ./run.sh                                            # downloads an4_sphere.tar.gz into download/
#   ./run.sh --smoke true --corpus-dir DIR              # a few speakers, tiny model, a few steps (CI)
#   ./run.sh --stage 6 --pretrained QuartzNet15x5Base-En.nemo
#
# Stages (each guarded by .done markers written only on success, so a rerun skips finished work):
#   0  corpus: download an4_sphere.tar.gz (CMU, NeMo's mirror) or link --corpus-dir   local/an4_download.sh
#   1  lhotse manifests: train, dev (--num-dev-speakers train speakers held out), test  local/an4_data_prep.sh
#   2  NeMo log-mel features, train 3-fold speed perturbed                         steps/make_features.sh
#   3  lang dir from the training transcripts: characters, or --bpe-size N          local/librispeech_lm.sh, steps/prepare_lang.sh
#   4  word LMs (lmplz on the training transcripts): --lm-order inside HLG, --rescore-order for rescoring; HLG
#                                                                                  steps/train_lm.sh, steps/make_hlg.sh
#   5  train --model from scratch, average the last --avg epochs                    steps/train.sh, steps/average.sh
#   6  fine-tune --pretrained (qnet checkpoint or .nemo) with the same budget, average  steps/train.sh --init-from
#   7  decode dev and test with every --decode-methods (LM scales are tuned on dev)  steps/decode.sh
#   8  $exp_dir/RESULTS.md: both systems, the published AN4 numbers, the targets     qnet.bin.make_results
# A missing --pretrained skips stage 6 (RESULTS.md then has the scratch system only).
set -euo pipefail

stage=0
stop_stage=8
smoke=false          # true: conf/smoke.conf first (options on the command line still win)
nj=2                 # parallel jobs for features and decoding

# Data
dl_dir=download
corpus_dir=                    # an existing AN4 copy (etc/ and wav/ inside); empty: download into $dl_dir
num_dev_speakers=8             # train speakers held out as dev (evenly spaced over the sorted list)
max_speakers=0                 # >0: only the first N speakers of CMU's train and test lists
speed_perturb=true
data_dir=data
exp_dir=exp

# Lang and LM
bpe_size=0                     # 0: characters (<blk> <space> a-z '); N: sentencepiece BPE with N tokens
lm_order=3                     # n-gram order of the LM inside HLG
rescore_order=4                # n-gram order of the rescoring LM

# Model and training (the same budget for both systems)
model=mini-s3                  # the architecture of egs/mini's pretrained model, so both systems are alike
num_threads=1                  # torch threads of the training process with --cpu-procs 1 (steps/train.sh gives
                               # each of several processes one)
cpu_procs=2                    # data-parallel training processes (steps/train.sh --cpu-procs)
num_epochs=30                  # 3-fold speed-perturbed epochs (~6,800 s of audio each)
max_duration=20                # seconds of audio per batch and process: small batches, more updates
lr=0.02                        # NovoGrad peak lr of both systems: on dev, fine-tuning at 0.005/0.01/0.02/0.03 gave greedy
finetune_lr=0.02               # WER 17.9/15.9/13.1/15.3, and training from scratch at 0.02 beat 0.01 (20.5 against 24.8)
# 74 real speakers: dropout 0.1 in every block and SpecAugment's time strips (2 of <= 5% of the utterance)
# against fitting the training speakers. Nothing on the frequency axis: on dev (fine-tuned, HLG WER, two training
# seeds each) 2 strips of <= 15 of the 64 mel bins gave 8.70 / 9.20, <= 8 bins 6.90 / 6.90, <= 4 bins 6.40 / 7.06,
# none 5.75 / 6.24, and none without the +-10% frequency warp 5.91 / 5.91 (greedy 9.20 / 8.21 against 9.03 / 8.70):
# our reading is that they blur what tells the E-set letters and nasals apart.
train_opts="--warmup-steps 300 --spec-cutout false --spec-augment true --freq-masks 0 --time-width 0.05 --dropout 0.1
            --num-workers 0"
avg=3
scratch=true
finetune=true
pretrained=../mini/exp/librispeech/quartznet_mini-s3_lang_char/averaged-avg-2.pt   # or scratch: this run's stage-5 model

# Decoding
decode_methods="greedy,ctc-decoding,1best,nbest-rescoring,whole-lattice-rescoring"
# narrower beams than steps/decode.sh's defaults (20/8/10000, 100 paths): AN4 utterances are short and the
# vocabulary small, and wide beams on a young model's flat posteriors make huge lattices. HLG 1best is also
# decoded at LM weights 0.5-1 and word insertion penalties 0 to -3 (picked on dev): at weight 1 and no penalty
# the LM of 948 transcripts outweighs uncertain letters, and half of 1best's errors are deleted words. The grid is
# small on purpose: dev has 609 words, and every extra setting is another chance to win on dev by luck. Picking on
# 4 dev speakers and scoring on the other 4 (all 35 splits, 21 fine-tuned models) gave 7.77% WER with these 12
# settings against 7.91% with weights 0.3-1 and penalties 0 to -4 (20 settings).
decode_opts="--search-beam 12 --output-beam 5 --max-active-states 2000 --num-paths 20 --lm-scales 0.1,0.2,0.3,0.5,0.7,0.9,1.1,1.3,1.5,2.0
             --hlg-scales 0.5,0.7,1 --word-penalties -3,-2,-1,0"

# --smoke true: read conf/smoke.conf before the options (Kaldi's --config), so the command line still wins.
for ((i = 1; i < $#; i++)); do
  j=$((i + 1))
  if [ "${!i}" = --smoke ] && [ "${!j}" = true ]; then set -- --config conf/smoke.conf "$@"; break; fi
done

. utils/recipe_init.sh   # setup, path.sh, cmd.sh, options (every variable above), log

prefix=an4
if [ "$bpe_size" -gt 0 ]; then lang_dir=$data_dir/lang_bpe_$bpe_size; unit=bpe; else lang_dir=$data_dir/lang_char; unit=char; fi
manifest_dir=$data_dir/manifests
fbank_dir=$data_dir/fbank
lm_dir=$data_dir/lm
scratch_dir=$exp_dir/quartznet_${model}_$(basename "$lang_dir")_scratch
ft_dir=$exp_dir/quartznet_$(basename "$lang_dir")_finetuned
if [ "$pretrained" = scratch ]; then
  pretrained=$scratch_dir/averaged-avg-$avg.pt   # made by stage 5 (smoke runs: the fine-tuning code path)
elif $finetune && [ ! -f "$pretrained" ] && [ ! -f "$ft_dir/.done" ]; then
  log "WARNING: --pretrained $pretrained does not exist (run egs/mini first, or give a qnet checkpoint or .nemo); no fine-tuned system"
  finetune=false
fi
systems=()
if $scratch; then systems+=("scratch=$scratch_dir"); fi
if $finetune; then systems+=("finetuned=$ft_dir"); fi
mkdir -p "$data_dir" "$exp_dir/log"
start=$(date +%s)
times=$exp_dir/log/stage_times.txt   # stage_done (utils/recipe_init.sh) writes "<stage> <seconds> <what>" lines

log "AN4 recipe: stages $stage..$stop_stage, smoke=$smoke, model $model, data in $data_dir, experiments in $exp_dir"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: AN4 in $dl_dir/an4${corpus_dir:+ (linked to $corpus_dir)}"
  t=$(date +%s)
  local/an4_download.sh --corpus-dir "$corpus_dir" "$dl_dir"
  stage_done 0 $t "corpus"
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: manifests in $manifest_dir"
  t=$(date +%s)
  local/an4_data_prep.sh --num-dev-speakers "$num_dev_speakers" --max-speakers "$max_speakers" \
    "$dl_dir/an4" "$manifest_dir"
  stage_done 1 $t "manifests"
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: features in $fbank_dir"
  t=$(date +%s)
  steps/make_features.sh --cmd "$train_cmd" --nj "$nj" --prefix $prefix --speed-perturb "$speed_perturb" \
    --parts "train dev test" "$manifest_dir" "$fbank_dir"
  stage_done 2 $t "features"
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: lang dir $lang_dir (training transcripts; vocabulary: every training word)"
  t=$(date +%s)
  local/librispeech_lm.sh --phase text --source lmplz --prefix $prefix --parts train \
    --text "$lm_dir/train_text.txt" --vocab-size 0 "$manifest_dir" "$lm_dir"
  steps/prepare_lang.sh --unit $unit --bpe-size "$bpe_size" --words "$lm_dir/vocab.txt" \
    "$lm_dir/train_text.txt" "$lang_dir"
  stage_done 3 $t "lang dir"
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: ${lm_order}-gram (HLG) and ${rescore_order}-gram (rescoring) LMs on the training transcripts; HLG"
  t=$(date +%s)
  steps/train_lm.sh --order "$lm_order" --name G_hlg "$lm_dir/train_text.txt" "$lang_dir" "$lm_dir"
  steps/train_lm.sh --order "$rescore_order" --name G_rescore "$lm_dir/train_text.txt" "$lang_dir" "$lm_dir"
  steps/make_hlg.sh "$lang_dir" "$lm_dir/G_hlg.fst.txt"
  stage_done 4 $t "LMs and HLG"
fi

train_common=(--cmd "$cuda_cmd" --num-gpus 0 --cpu-procs "$cpu_procs" --num-epochs "$num_epochs" --max-duration "$max_duration"
              --train-cuts "$fbank_dir/${prefix}_cuts_train.jsonl.gz" --valid-cuts "$fbank_dir/${prefix}_cuts_dev.jsonl.gz"
              --train-opts "--num-threads $num_threads $train_opts")

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ] && $scratch; then
  log "Stage 5: train $model from scratch in $scratch_dir"
  t=$(date +%s)
  steps/train.sh "${train_common[@]}" --model "$model" --lr "$lr" "$lang_dir" "$scratch_dir"
  steps/average.sh --avg "$avg" --out "$scratch_dir/averaged-avg-$avg.pt" "$scratch_dir"
  stage_done 5 $t "train from scratch"
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ] && $finetune; then
  log "Stage 6: fine-tune $pretrained in $ft_dir"
  t=$(date +%s)
  [ -f "$pretrained" ] || { echo "$0: --pretrained $pretrained does not exist" >&2; exit 1; }
  steps/train.sh "${train_common[@]}" --init-from "$pretrained" --lr "$finetune_lr" "$lang_dir" "$ft_dir"
  steps/average.sh --avg "$avg" --out "$ft_dir/averaged-avg-$avg.pt" "$ft_dir"
  stage_done 6 $t "fine-tune"
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  t=$(date +%s)
  for sys in "${systems[@]}"; do
    dir=${sys#*=}
    for part in dev test; do
      log "Stage 7: decode $part with $dir ($decode_methods)"
      # shellcheck disable=SC2086
      steps/decode.sh --cmd "$decode_cmd" --nj "$nj" --methods "$decode_methods" --test-set "$part" \
        --G-rescore "$lm_dir/G_rescore.fst.txt" $decode_opts \
        "$dir/averaged-avg-$avg.pt" "$fbank_dir/${prefix}_cuts_$part.jsonl.gz" "$lang_dir" "$dir/decode_$part"
    done
  done
  stage_done 7 $t "decoding"
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: $exp_dir/RESULTS.md"
  if $smoke; then title="QuartzNet on AN4 (smoke run: a few speakers and steps; the targets are not expected to be met)"
  else title="QuartzNet on CMU AN4: from scratch and fine-tuned"; fi
  checks=()
  for sys in "${systems[@]}"; do
    name=${sys%%=*}
    checks+=(--check "$name, HLG 1best WER at or below ESPnet's best AN4 result (7.4): $name:1best:test <= 7.4"
             --check "$name, greedy CER <= 10%: $name:greedy-cer:test <= 10")
  done
  python -m qnet.bin.make_results --out "$exp_dir/RESULTS.md" --title "$title" --published an4 \
    --sets dev test --tune test=dev --cer true "${checks[@]}" --stage-times "$times" \
    --note "corpus: $dl_dir/an4; dev = train speakers $(tr '\n' ' ' < "$manifest_dir/an4_dev_speakers.txt")" \
    --note "fine-tuned from: $pretrained" \
    --note "wall time of this invocation: $(( $(date +%s) - start )) s (stages $stage..$stop_stage)" \
    --print true "${systems[@]}"
fi
log "done (stages $stage..$stop_stage) in $(( $(date +%s) - start )) s"
