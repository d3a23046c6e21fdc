"""Speed of the corpus + feature stages on a small synthetic LibriSpeech-layout corpus.

    python bench/bench_features_stage.py [--minutes 10] [--num-jobs 1] [--work-dir /tmp/qnet_bench_feats]

Builds N FLAC utterances (2-15 s of tone + noise; feature cost does not depend on content), then
times prepare_librispeech, and compute_features (nemo-mel, in-process, --num-jobs workers) without
and with 3-fold speed perturbation. Prints seconds and real-time factors (lower is faster).
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from corpus_helpers import tone, write_flac  # noqa: E402


def main() -> None:
    """Build the corpus, time the stages, print the numbers."""
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=10.0, help="audio in the corpus")
    p.add_argument("--num-jobs", type=int, default=1)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/qnet_bench_feats"))
    args = p.parse_args()
    from qnet.bin import compute_features, prepare_librispeech

    shutil.rmtree(args.work_dir, ignore_errors=True)
    rng = np.random.default_rng(0)
    chap = args.work_dir / "LibriSpeech" / "train-clean-5" / "1" / "1"
    chap.mkdir(parents=True)
    total, lines, i = 0.0, [], 0
    while total < args.minutes * 60:
        dur = float(rng.uniform(2, 15))
        uid = f"1-1-{i:04d}"
        write_flac(chap / f"{uid}.flac", tone(dur, seed=i, freq=200 + 10 * i))
        lines.append(f"{uid} SOME WORDS FOR UTTERANCE {i}")
        total += dur
        i += 1
    (chap / "1-1.trans.txt").write_text("\n".join(lines) + "\n")
    (args.work_dir / "LibriSpeech" / "dev-clean-2").symlink_to("train-clean-5")  # same audio, no perturbation
    print(f"corpus: {i} utterances, {total / 60:.1f} min of 16 kHz FLAC")

    t = time.time()
    prepare_librispeech.main([str(args.work_dir / "LibriSpeech"), str(args.work_dir / "m"), "--max-duration", "0",
                              "-j", str(args.num_jobs), "--log-file", str(args.work_dir / "prep.log")])
    prep = time.time() - t
    print(f"prepare_librispeech (2 parts, probe every file): {prep:.1f} s, RTF {prep / (2 * total):.5f}")
    for part, sp, audio in (("dev-clean-2", "false", total), ("train-clean-5", "true", 3 * total)):
        t = time.time()
        compute_features.main(["--src-dir", str(args.work_dir / "m"), "--prefix", "librispeech", "--parts", part,
                               "--out-dir", str(args.work_dir / "fbank"), "--speed-perturb", sp,
                               "--num-jobs", str(args.num_jobs), "--log-file", str(args.work_dir / "feats.log")])
        el = time.time() - t
        print(f"compute_features {part} speed_perturb={sp} num_jobs={args.num_jobs}: {el:.1f} s for "
              f"{audio / 60:.1f} min audio, RTF {el / audio:.5f} ({audio / el:.0f} s audio per s)")


if __name__ == "__main__":
    main()
