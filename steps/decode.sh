#!/usr/bin/env bash
# Decode a cut set in N parallel jobs, merge the hypotheses and score once (Kaldi style).
# Usage: steps/decode.sh [options] <model> <cuts> <lang-dir> <decode-dir>
#   e.g. steps/decode.sh --cmd "$decode_cmd" --nj 4 --methods greedy,1best,whole-lattice-rescoring \
#          --G-rescore data/lm/G_4_gram.fst.txt exp/avg.pt data/fbank/mini_cuts_test.jsonl.gz \
#          data/lang_char exp/decode_test
#   NNLM rescoring (n-best of the HLG lattice, scored with G_rescore and a neural LM, both scales swept):
#        --methods 1best,nnlm-rescoring --G-rescore data/lm/G_4_gram.fst.txt --nnlm exp/nnlm/nnlm.pt
# Writes <decode-dir>/{ref,hyp}-SET*.txt, recogs-/errs-/wer-summary-SET files and log/decode.JOB.log.
#
# Markers: <decode-dir>/.done (after scoring succeeded; lists the methods decoded so far) and
# <decode-dir>/split<nj>/<job>/.done.<method> per job and method. A rerun decodes only the methods (and
# jobs) not done yet, so adding --methods decodes what is missing; <decode-dir>/decode_opts.txt records
# every other setting, and when one changes everything is decoded again.
set -euo pipefail

cmd=run.pl
nj=1
methods=greedy
test_set=
hlg=
G_rescore=
lm_scales=
hlg_scales=1
word_penalties=0
nnlm=
nnlm_scales=
nnlm_max_tokens=20000
max_duration=200
device=cpu
search_beam=20
output_beam=8
min_active_states=30
max_active_states=10000
num_paths=100
nbest_scale=0.5
max_lattice_frames=1500
blank_skip_threshold=0
max_lattice_arcs=50000
max_intersect_arcs=2000000
cer=
help_message="Usage: $0 [--cmd run.pl] [--nj N] [--methods greedy,ctc-decoding,1best,nbest-rescoring,whole-lattice-rescoring,nnlm-rescoring]
  [--test-set NAME] [--hlg HLG.pt] [--G-rescore G.fst.txt] [--lm-scales 0.5,0.8]
  [--hlg-scales 0.5,1 (1best: LM weights)] [--word-penalties -1,0 (word insertion penalties, swept with the
  1best and rescoring scales)] [--nnlm nnlm.pt]
  [--nnlm-scales 0,0.2,0.4] [--nnlm-max-tokens 20000] [--max-duration 200]
  [--device cpu|cuda] [--search-beam 20] [--output-beam 8] [--min-active-states 30]
  [--max-active-states 10000] [--num-paths 100] [--nbest-scale 0.5] [--max-lattice-frames 1500]
  [--blank-skip-threshold 0]
  [--max-lattice-arcs 50000]
  [--max-intersect-arcs 2000000] [--cer true|false] <model> <cuts> <lang-dir> <decode-dir>"

. utils/parse_options.sh

if [ $# -ne 4 ]; then
  echo "$help_message" >&2
  exit 1
fi
model=$1
cuts=$2
lang_dir=$3
dir=$4

for f in "$model" "$cuts" "$lang_dir/tokens.txt"; do
  [ -f "$f" ] || { echo "$0: $f is missing" >&2; exit 1; }
done
if [ -z "$test_set" ]; then
  test_set=$(basename "$cuts"); test_set=${test_set%.gz}; test_set=${test_set%.jsonl}
fi
sdata=$dir/split$nj
mkdir -p "$dir/log" "$sdata"

nnlm_stamp=
if [ -n "$nnlm" ]; then
  [ -f "$nnlm" ] || { echo "$0: --nnlm $nnlm is missing" >&2; exit 1; }
  nnlm_stamp=$(stat -c 'size=%s mtime=%Y' "$nnlm")
fi
# Every setting but --methods and --cmd: a change invalidates all decoded parts.
settings="model=$model $(stat -c 'size=%s mtime=%Y' "$model")
cuts=$cuts nj=$nj
lang_dir=$lang_dir hlg=$hlg G_rescore=$G_rescore lm_scales=$lm_scales
hlg_scales=$hlg_scales word_penalties=$word_penalties
nnlm=$nnlm $nnlm_stamp nnlm_scales=$nnlm_scales nnlm_max_tokens=$nnlm_max_tokens
test_set=$test_set max_duration=$max_duration device=$device
search_beam=$search_beam output_beam=$output_beam min_active_states=$min_active_states max_active_states=$max_active_states
num_paths=$num_paths nbest_scale=$nbest_scale max_lattice_frames=$max_lattice_frames max_lattice_arcs=$max_lattice_arcs max_intersect_arcs=$max_intersect_arcs
blank_skip_threshold=$blank_skip_threshold"
if [ -f "$dir/decode_opts.txt" ] && [ "$(cat "$dir/decode_opts.txt")" != "$settings" ]; then
  echo "$0: settings differ from $dir/decode_opts.txt; decoding all methods again" >&2
  rm -f "$dir/.done" "$sdata"/*/.done.* "$sdata"/*/hyp-*.txt "$dir"/{hyp,recogs,errs}-*.txt
fi
echo "$settings" > "$dir/decode_opts.txt"

missing=
for m in ${methods//,/ }; do
  for j in $(seq 1 "$nj"); do
    [ -f "$sdata/$j/.done.$m" ] || { missing="$missing $m"; break; }
  done
done
if [ -z "$missing" ] && [ -f "$dir/.done" ]; then
  echo "$0: $dir already has $methods decoded with these settings (see $dir/.done); nothing to do"
  exit 0
fi

if [ ! -f "$sdata/.done" ]; then
  python - "$cuts" "$nj" "$sdata" <<'PYEOF'
import sys
from lhotse import CutSet
cuts = CutSet.from_file(sys.argv[1]).to_eager()
n = int(sys.argv[2])
if len(cuts) < n:
    sys.exit(f"decode.sh: {sys.argv[1]} has {len(cuts)} cuts, fewer than --nj {n}")
for i, part in enumerate(cuts.split(n), 1):
    part.to_file(f"{sys.argv[3]}/cuts.{i}.jsonl.gz")
PYEOF
  touch "$sdata/.done"
fi

opts=(--lang-dir "$lang_dir" --test-set "$test_set" --max-duration "$max_duration"
      --device "$device" --search-beam "$search_beam" --output-beam "$output_beam"
      --min-active-states "$min_active_states" --max-active-states "$max_active_states"
      --num-paths "$num_paths" --nbest-scale "$nbest_scale" --max-lattice-frames "$max_lattice_frames"
      --blank-skip-threshold "$blank_skip_threshold" --hlg-scales="$hlg_scales" --word-penalties="$word_penalties"
      --max-lattice-arcs "$max_lattice_arcs"
      --max-intersect-arcs "$max_intersect_arcs" --score false)
[ -n "$hlg" ] && opts+=(--hlg "$hlg")
[ -n "$G_rescore" ] && opts+=(--G-rescore "$G_rescore")
[ -n "$lm_scales" ] && opts+=(--lm-scales "$lm_scales")
[ -n "$nnlm" ] && opts+=(--nnlm "$nnlm" --nnlm-max-tokens "$nnlm_max_tokens")
[ -n "$nnlm_scales" ] && opts+=(--nnlm-scales "$nnlm_scales")

# The graphs the jobs share are made once, here, before the jobs start: N jobs building the same
# G.pt at once would race and hold N copies of G in memory. (HLG.pt comes from steps/make_hlg.sh.)
case ",${missing// /,}," in
  *,1best,*|*rescoring,*) need_hlg=true;; *) need_hlg=false;;
esac
if $need_hlg; then
  cache_opts=(--lang-dir "$lang_dir" --hlg "${hlg:-$lang_dir/HLG.pt}" --log-file "$dir/log/cache_lm.log")
  case ",${missing// /,}," in
    *rescoring,*)
      [ -n "$G_rescore" ] || { echo "$0: rescoring methods need --G-rescore" >&2; exit 1; }
      cache_opts+=(--G "$G_rescore")
      python -m qnet.bin.cache_lm "${cache_opts[@]}";;
    *) [ -f "${hlg:-$lang_dir/HLG.pt}" ] || { echo "$0: ${hlg:-$lang_dir/HLG.pt} is missing (steps/make_hlg.sh)" >&2; exit 1; };;
  esac
fi

# A job decodes the methods its part has no .done.<method> for, then marks them done.
cat > "$sdata/decode_job.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
j=\$1
todo=
for m in ${methods//,/ }; do
  [ -f $sdata/\$j/.done.\$m ] || todo=\$todo,\$m
done
[ -n "\$todo" ] || { echo "part \$j: $methods already decoded"; exit 0; }
echo "part \$j: decoding \${todo#,}"
python -m qnet.bin.decode --model $model --cuts $sdata/cuts.\$j.jsonl.gz --out-dir $sdata/\$j \\
  --methods \${todo#,} ${opts[*]}
for m in \${todo//,/ }; do touch $sdata/\$j/.done.\$m; done
EOF
job_cmd="bash $sdata/decode_job.sh JOB"
launcher=${cmd%% *}
if command -v "$launcher" >/dev/null 2>&1 || [ -x "$launcher" ]; then
  $cmd JOB=1:$nj "$dir/log/decode.JOB.log" "$job_cmd"
else
  echo "$0: WARNING: '$launcher' not found; running the $nj jobs one after another" >&2
  for j in $(seq 1 "$nj"); do
    bash -c "${job_cmd//JOB/$j}" > "$dir/log/decode.$j.log" 2>&1 \
      || { echo "$0: job $j failed, log is in $dir/log/decode.$j.log" >&2; exit 1; }
  done
fi

# Merge the parts: one ref file and one hyp file per result key.
cat "$sdata"/*/ref-"$test_set".txt | sort > "$dir/ref-$test_set.txt"
for f in "$sdata"/1/hyp-"$test_set"-*.txt; do
  name=$(basename "$f")
  for j in $(seq 1 "$nj"); do
    [ -f "$sdata/$j/$name" ] || { echo "$0: $sdata/$j/$name is missing" >&2; exit 1; }
    cat "$sdata/$j/$name"
  done | sort > "$dir/$name"
done

score_opts=()
[ -n "$cer" ] && score_opts+=(--cer "$cer")
[ -z "$cer" ] && [ ! -f "$lang_dir/bpe.model" ] && score_opts+=(--cer true)
python -m qnet.bin.score --dir "$dir" --test-set "$test_set" "${score_opts[@]}"
# .done lists every method decoded with these settings (this run's and earlier runs').
done_methods=$(for f in "$sdata"/1/.done.*; do echo "${f##*/.done.}"; done | sort | paste -sd, -)
echo "methods=$done_methods" > "$dir/.done.tmp" && mv "$dir/.done.tmp" "$dir/.done"
echo "$0: done ($done_methods); see $dir/wer-summary-$test_set.txt"
