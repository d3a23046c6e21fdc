#!/usr/bin/env bash
# LibriSpeech word LMs: the openslr 11 ARPAs when they can be downloaded, else kenlm lmplz on the
# LibriSpeech LM text (librispeech-lm-norm.txt.gz, or --text), or ready ARPAs (--source arpa, which
# local/wsj_lm.sh uses for the LDC ARPAs). Two phases, because the lang dir needs the LM vocabulary
# before G can be built against its words.txt:
#
#   --phase text  <lm-dir>/train_text.txt   transcripts of the training supervisions (for the lang dir)
#                 <lm-dir>/vocab.txt        LM vocabulary: openslr's librispeech-vocab.txt (200k words),
#                                           the --vocab-size most frequent words of the LM text (lmplz),
#                                           or the unigrams of --arpa-hlg (arpa)
#                 <lm-dir>/source           openslr | lmplz | arpa (what `--source auto` resolved to)
#   --phase lm    <lm-dir>/G_3_gram.fst.txt pruned 3-gram for HLG (openslr 3-gram.pruned.1e-7, lmplz
#                                           -o 3 --prune $prune_hlg, or --arpa-hlg)
#                 <lm-dir>/G_4_gram.fst.txt 4-gram for rescoring (openslr 4-gram, lmplz -o 4, or
#                                           --arpa-rescore; with --source arpa and no --arpa-rescore,
#                                           lmplz -o 4 on --text)
#   --phase lm-text                         the LM text itself, for the neural LM: --text, or
#                                           <dl-dir>/librispeech-lm-norm.txt.gz downloaded from --url
#
# Usage: local/librispeech_lm.sh [options] <manifest-dir> <lm-dir>
#   e.g. local/librispeech_lm.sh --phase text --parts "train-clean-100" data/manifests data/lm
#        local/librispeech_lm.sh --phase lm --lang-dir data/lang_char data/manifests data/lm
# Each phase writes <lm-dir>/.<phase>.done after success and is skipped when it exists.
set -euo pipefail

phase=text
source=auto            # auto | openslr | lmplz | arpa
url=https://www.openslr.org/resources/11
dl_dir=download/lm
text=                  # LM text (plain or .gz) for lmplz; default: $dl_dir/librispeech-lm-norm.txt.gz
prefix=librispeech     # manifest prefix: <manifest-dir>/<prefix>_supervisions_<part>.jsonl.gz
parts="train-clean-100 train-clean-360 train-other-500"
supervisions=          # extra supervision manifests whose text joins train_text.txt (e.g. Common Voice)
vocab_size=200000      # lmplz: keep this many of the most frequent words as the vocabulary (0 = all)
prune_hlg="0 1 1"      # lmplz --prune for the 3-gram inside HLG
prune_rescore=""       # lmplz --prune for the rescoring 4-gram
arpa_hlg=              # --source arpa: the ARPA (plain or .gz) for HLG
arpa_rescore=          # --source arpa: the ARPA for rescoring (default: lmplz -o 4 on --text)
lang_dir=              # --phase lm: the lang dir whose words.txt G uses

help_message="Usage: $0 [--phase text|lm|lm-text] [--source auto|openslr|lmplz|arpa] [--url URL] [--dl-dir DIR] [--text FILE]
  [--prefix librispeech] [--parts \"train parts\"] [--supervisions \"files\"] [--vocab-size N]
  [--prune-hlg \"0 1 1\"] [--prune-rescore \"\"] [--arpa-hlg FILE] [--arpa-rescore FILE] [--lang-dir DIR]
  <manifest-dir> <lm-dir>"

echo "$0 $*"
. utils/parse_options.sh

if [ $# -ne 2 ]; then
  echo "$help_message" >&2
  exit 1
fi
manifest_dir=$1
lm_dir=$2
mkdir -p "$lm_dir"
marker=$lm_dir/.$phase.done
if [ -f "$marker" ]; then
  echo "$0: phase $phase done ($marker), skipping"
  exit 0
fi

# fetch URL DEST: download to DEST.part, then rename (so a partial file is never taken as complete).
fetch() {
  [ -s "$2" ] && return 0
  mkdir -p "$(dirname "$2")"
  echo "$0: downloading $1"
  python - "$1" "$2" <<'PYEOF'
import os, shutil, sys, urllib.request
from tqdm import tqdm
url, dest = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(url, timeout=30) as r, open(dest + ".part", "wb") as f:
        total = int(r.headers.get("Content-Length") or 0)
        with tqdm(total=total or None, unit="B", unit_scale=True, desc=os.path.basename(dest)) as bar:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                f.write(chunk)
                bar.update(len(chunk))
    os.replace(dest + ".part", dest)
except Exception as exc:
    sys.exit(f"cannot download {url}: {exc}")
PYEOF
}

default_text=$dl_dir/librispeech-lm-norm.txt.gz

case $phase in
text)
  case $source in
    auto)
      if fetch "$url/librispeech-vocab.txt" "$dl_dir/librispeech-vocab.txt"; then resolved=openslr
      else echo "$0: openslr LMs are not reachable; building them with lmplz"; resolved=lmplz; fi ;;
    openslr) fetch "$url/librispeech-vocab.txt" "$dl_dir/librispeech-vocab.txt"; resolved=openslr ;;
    lmplz) resolved=lmplz ;;
    arpa)
      [ -f "$arpa_hlg" ] || { echo "$0: --source arpa needs --arpa-hlg FILE (got '$arpa_hlg')" >&2; exit 1; }
      resolved=arpa ;;
    *) echo "$0: --source must be auto, openslr, lmplz or arpa, not '$source'" >&2; exit 1 ;;
  esac

  sups=""
  for p in $parts; do sups="$sups $manifest_dir/${prefix}_supervisions_$p.jsonl.gz"; done
  sups="$sups $supervisions"
  for f in $sups; do [ -f "$f" ] || { echo "$0: $f is missing (run the manifest stage)" >&2; exit 1; }; done
  # shellcheck disable=SC2086
  python - "$lm_dir/train_text.txt" $sups <<'PYEOF'
import sys
from lhotse import load_manifest_lazy
from qnet.utils import atomic_write_text
lines = []
for path in sys.argv[2:]:
    n = len(lines)
    lines += [s.text for s in load_manifest_lazy(path) if s.text and s.text.strip()]
    if len(lines) == n:
        sys.exit(f"{path}: no transcripts")
atomic_write_text(sys.argv[1], "".join(t + "\n" for t in lines))
print(f"{sys.argv[1]}: {len(lines)} training transcripts")
PYEOF

  if [ $resolved = openslr ]; then
    cp "$dl_dir/librispeech-vocab.txt" "$lm_dir/vocab.txt.tmp"
  elif [ $resolved = arpa ]; then
    # the words of the ARPA's unigram section, without <s> </s> <unk>
    gzip -dcf "$arpa_hlg" | awk '/^\\1-grams:/ {f = 1; next} /^\\/ {if (f) exit} f && NF >= 2 && $2 !~ /^<.*>$/ {print $2}' \
      > "$lm_dir/vocab.txt.tmp"
    [ -s "$lm_dir/vocab.txt.tmp" ] || { echo "$0: $arpa_hlg has no unigrams" >&2; exit 1; }
  else
    [ -n "$text" ] || { text=$default_text; fetch "$url/librispeech-lm-norm.txt.gz" "$text" || true; }
    [ -f "$text" ] || { echo "$0: no LM text ($text); pass --text FILE (normalized sentences, plain or .gz)" >&2; exit 1; }
    # Word counts with awk (one pass, any size), most frequent first; ties in byte order for determinism.
    gzip -dcf "$text" | awk '{for (i = 1; i <= NF; i++) c[$i]++} END {for (w in c) print c[w], w}' \
      | LC_ALL=C sort -k1,1nr -k2,2 | awk -v n="$vocab_size" 'n == 0 || NR <= n {print $2}' > "$lm_dir/vocab.txt.tmp"
    [ -s "$lm_dir/vocab.txt.tmp" ] || { echo "$0: $text has no words" >&2; exit 1; }
  fi
  mv "$lm_dir/vocab.txt.tmp" "$lm_dir/vocab.txt"
  echo "$resolved" > "$lm_dir/source"
  echo "$0: $lm_dir/vocab.txt: $(wc -l < "$lm_dir/vocab.txt") words ($resolved)"
  ;;
lm)
  [ -n "$lang_dir" ] || { echo "$0: --phase lm needs --lang-dir" >&2; exit 1; }
  [ -f "$lm_dir/source" ] || { echo "$0: $lm_dir/source is missing; run --phase text first" >&2; exit 1; }
  resolved=$(cat "$lm_dir/source")
  if [ "$source" != auto ] && [ "$source" != "$resolved" ]; then
    echo "$0: --source $source, but the vocabulary in $lm_dir was made for '$resolved'; remove $lm_dir to switch" >&2
    exit 1
  fi
  if [ "$resolved" = openslr ]; then
    fetch "$url/3-gram.pruned.1e-7.arpa.gz" "$dl_dir/3-gram.pruned.1e-7.arpa.gz"
    fetch "$url/4-gram.arpa.gz" "$dl_dir/4-gram.arpa.gz"
    steps/train_lm.sh --order 3 --name G_3_gram "$dl_dir/3-gram.pruned.1e-7.arpa.gz" "$lang_dir" "$lm_dir"
    steps/train_lm.sh --order 4 --name G_4_gram "$dl_dir/4-gram.arpa.gz" "$lang_dir" "$lm_dir"
  elif [ "$resolved" = arpa ]; then
    steps/train_lm.sh --order 3 --name G_3_gram "$arpa_hlg" "$lang_dir" "$lm_dir"
    if [ -n "$arpa_rescore" ]; then
      steps/train_lm.sh --order 4 --name G_4_gram "$arpa_rescore" "$lang_dir" "$lm_dir"
    else
      [ -f "$text" ] || { echo "$0: no --arpa-rescore and no LM text '$text' for a rescoring 4-gram" >&2; exit 1; }
      steps/train_lm.sh --order 4 --prune "$prune_rescore" --name G_4_gram "$text" "$lang_dir" "$lm_dir"
    fi
  else
    [ -n "$text" ] || text=$default_text
    [ -f "$text" ] || { echo "$0: no LM text ($text); pass --text FILE" >&2; exit 1; }
    steps/train_lm.sh --order 3 --prune "$prune_hlg" --name G_3_gram "$text" "$lang_dir" "$lm_dir"
    steps/train_lm.sh --order 4 --prune "$prune_rescore" --name G_4_gram "$text" "$lang_dir" "$lm_dir"
  fi
  ;;
lm-text)
  if [ -n "$text" ]; then
    [ -f "$text" ] || { echo "$0: --text $text is missing" >&2; exit 1; }
  else
    fetch "$url/librispeech-lm-norm.txt.gz" "$default_text"
  fi
  ;;
*)
  echo "$0: --phase must be text, lm or lm-text, not '$phase'" >&2
  exit 1 ;;
esac
touch "$marker"
