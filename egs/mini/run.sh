#!/usr/bin/env bash
# The whole qnet pipeline on CPU in minutes: two synthetic (TTS) corpora, one in the LibriSpeech layout
# and one in the WSJ LDC layout, run through the egs/librispeech and egs/wsj recipes themselves (their
# run.sh, with the mini settings of conf/*.conf), then one RESULTS.md with the mini targets.
#
#   ./run.sh                   # the full mini run (budgeted for <= 20 min on 2 idle cores; after tools/setup.sh)
#   ./run.sh --seed 1          # a second, independent run: other corpora (same voices), other training seed
#   ./run.sh --smoke true      # tiny corpus, tiny model, a few steps: every stage in a few minutes (CI)
#   ./run.sh --stage 2 --wsj-opts "--finetune-epochs 20"
#
# Full, smoke and other-seed runs keep their own folders (data/ exp/, data_smoke/ exp_smoke/,
# data_seed1/ exp_seed1/), so any of them can run after another; the .done markers still refuse to reuse
# a folder made with other settings.
#
# Stages (each guarded by .done markers written only on success; a rerun skips finished work):
#   0  synthesize both corpora into $data_dir/synth                          local/mini_synth.sh
#   1  egs/librispeech stages 0-7 on the LibriSpeech-layout corpus:
#      lang, LM (lmplz on the corpus's LM text), HLG, pretrain --model, average, decode
#                                                                             ../librispeech/run.sh
#   2  egs/wsj stages 0-7 on the WSJ-layout corpus: fine-tune the stage-1 model, and train the same
#      model from scratch with the same budget; decode both                  ../wsj/run.sh
#   3  $exp_dir/RESULTS.md (all systems, the per-voice table of test-clean, each stage's wall time and
#      the mini targets with PASS/FAIL), printed                             qnet.bin.make_results
set -euo pipefail

stage=0
stop_stage=3
smoke=false          # true: conf/*_smoke.conf, the smoke corpus and the tiny model
seed=0               # seed of the corpora (same seed -> same files) and of training in both recipes
nj=2                 # parallel jobs (synthesis, features, decoding)
model=               # model pretrained in stage 1 and trained from scratch in stage 2 (default: mini-s3; smoke: tiny)
avg=                 # epochs averaged in both recipes (default: 2; smoke: 1)
ls_opts=""           # more egs/librispeech/run.sh options, e.g. "--num-epochs 40" (split on spaces: for
                     # values with spaces pass "--config FILE", which overrides conf/librispeech.conf)
wsj_opts=""          # more egs/wsj/run.sh options, e.g. "--finetune-lr 0.005" (same rule; "--config FILE")
synth_opts=""        # more local/mini_synth.sh --synth-opts, e.g. "--num-train 2000"
data_dir=             # default: data (smoke: data_smoke; --seed N other than 0: data_seedN)
exp_dir=              # default: exp (exp_smoke, exp_seedN)

. utils/recipe_init.sh   # setup, path.sh, cmd.sh, options (every variable above), log

if $smoke; then
  sfx=_smoke; title="qnet mini recipe (smoke run: a few steps; the targets are not expected to be met)"
else
  sfx=; title="qnet mini recipe"
fi
ls_conf=conf/librispeech$sfx.conf
wsj_conf=conf/wsj$sfx.conf
run_sfx=$sfx
[ "$seed" = 0 ] || run_sfx=${sfx}_seed$seed
[ -n "$data_dir" ] || data_dir=data$run_sfx
[ -n "$exp_dir" ] || exp_dir=exp$run_sfx
# Each recipe's conf holds its qnet.bin.train options; the run's seed is added to them.
ls_train_opts="$(. "$ls_conf"; echo "$train_opts") --seed $seed"
wsj_train_opts="$(. "$wsj_conf"; echo "$train_opts") --seed $seed"
[ -n "$model" ] || { if $smoke; then model=tiny; else model=mini-s3; fi; }
[ -n "$avg" ] || { if $smoke; then avg=1; else avg=2; fi; }
synth=$data_dir/synth
ls_model_dir=$exp_dir/librispeech/quartznet_${model}_lang_char
pretrained=$ls_model_dir/averaged-avg-$avg.pt
mkdir -p "$data_dir" "$exp_dir/log"
start=$(date +%s)
times=$exp_dir/log/stage_times.txt   # stage_done (utils/recipe_init.sh) writes "<stage> <seconds> <what>" lines

log "mini recipe: smoke=$smoke model=$model, data in $data_dir, experiments in $exp_dir"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: synthesize the LibriSpeech- and WSJ-layout corpora into $synth"
  t=$(date +%s)
  local/mini_synth.sh --smoke "$smoke" --seed "$seed" --nj "$nj" --synth-opts "$synth_opts" "$synth"
  stage_done 0 $t "synthesis (local/mini_synth.sh)"
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: egs/librispeech recipe on $synth/LibriSpeech (pretraining $model)"
  t=$(date +%s)
  # shellcheck disable=SC2086
  ../librispeech/run.sh --config "$ls_conf" --stop-stage 7 --nj "$nj" \
    --corpus-dir "$synth/LibriSpeech" --lm-text "$synth/lm/librispeech-lm-norm.txt" \
    --dl-dir "$data_dir/librispeech/download" --data-dir "$data_dir/librispeech" \
    --exp-dir "$exp_dir/librispeech" --model "$model" --avg "$avg" --train-opts "$ls_train_opts" $ls_opts
  stage_done 1 $t "egs/librispeech: features, lang, LM, HLG, pretraining, decoding"
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: egs/wsj recipe on $synth/wsj (fine-tuning $pretrained, and $model from scratch)"
  t=$(date +%s)
  # shellcheck disable=SC2086
  ../wsj/run.sh --config "$wsj_conf" --stop-stage 7 --nj "$nj" \
    --wsj0 "$synth/wsj/LDC93S6B" --wsj1 "$synth/wsj/LDC94S13B" --pretrained "$pretrained" \
    --data-dir "$data_dir/wsj" --exp-dir "$exp_dir/wsj" --scratch-model "$model" --avg "$avg" \
    --train-opts "$wsj_train_opts" $wsj_opts
  stage_done 2 $t "egs/wsj: features, lang, LM, HLG, fine-tuning, training from scratch, decoding"
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: $exp_dir/RESULTS.md"
  python -m qnet.bin.make_results --out "$exp_dir/RESULTS.md" --print true \
    --title "$title: synthetic TTS corpora" \
    --sets dev-clean test-clean test_dev93 test_eval92 \
    --tune test-clean=dev-clean --tune test_eval92=test_dev93 \
    --check "greedy WER on unseen voices: librispeech:greedy:test-clean <= 15" \
    --check "HLG 1best WER on unseen voices: librispeech:1best:test-clean <= 8" \
    --check "HLG + LM vs greedy: librispeech:1best:test-clean <= 0.7 * librispeech:greedy:test-clean" \
    --check "fine-tuned vs from scratch (greedy): wsj-finetuned:greedy:test_eval92 <= 0.7 * wsj-scratch:greedy:test_eval92" \
    --check "fine-tuned vs from scratch (HLG): wsj-finetuned:1best:test_eval92 <= 0.7 * wsj-scratch:1best:test_eval92" \
    --check "NNLM vs n-best rescoring: librispeech:nnlm-rescoring:test-clean <= 0.95 * librispeech:nbest-rescoring:test-clean" \
    --check "NNLM vs whole-lattice rescoring: librispeech:nnlm-rescoring:test-clean <= 0.95 * librispeech:whole-lattice-rescoring:test-clean" \
    --voices "test-clean=$synth/synth_voices.txt" --voices "test_eval92=$synth/wsj/synth_voices.txt" \
    --stage-times "$times" \
    --note "corpora: local/mini_synth.sh --smoke $smoke --seed $seed ($synth); training seed $seed" \
    --note "wall time of this invocation (stages $stage..$stop_stage): $(( $(date +%s) - start )) s" \
    "librispeech=$ls_model_dir" "wsj-finetuned=$exp_dir/wsj/quartznet_finetuned" \
    "wsj-scratch=$exp_dir/wsj/quartznet_${model}_scratch"
fi
log "done (stages $stage..$stop_stage) in $(( $(date +%s) - start )) s"
