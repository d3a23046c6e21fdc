"""Speed of qnet's NeMo log-mel extraction, in seconds of audio per second of wall time.

    python bench/bench_features.py [--threads 2] [--seconds 120] [--clip-seconds 10] [--repeats 3]

Measures the batched torch function (`compute_nemo_mel`, batch of clips), the lhotse extractor one
clip at a time (`NemoMelExtractor.extract`, what `compute_and_store_features` calls) and its
`extract_batch` (what `OnTheFlyFeatures` calls). Prints the best of `--repeats` runs.
"""

import argparse
import time

import numpy as np
import torch


def best_time(fn, repeats: int) -> float:
    """Fastest of `repeats` wall-clock runs of fn()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Run the benchmark and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seconds", type=float, default=120.0, help="total audio per run")
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="length of each clip")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from qnet.features import NemoMelExtractor, compute_nemo_mel

    torch.set_num_threads(args.threads)
    rate = 16000
    n_clips = max(1, int(args.seconds / args.clip_seconds))
    clip = int(args.clip_seconds * rate)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((n_clips, clip))).astype(np.float32)
    total = n_clips * args.clip_seconds
    batch = torch.from_numpy(audio)
    lens = torch.full((n_clips,), clip, dtype=torch.int64)
    extractor = NemoMelExtractor()
    compute_nemo_mel(batch[:1], lens[:1])  # warm-up

    results = {
        f"compute_nemo_mel, one batch of {n_clips}": best_time(lambda: compute_nemo_mel(batch, lens), args.repeats),
        "compute_nemo_mel, batches of 8": best_time(
            lambda: [compute_nemo_mel(batch[i:i + 8], lens[i:i + 8]) for i in range(0, n_clips, 8)], args.repeats
        ),
        "NemoMelExtractor.extract, one clip at a time": best_time(
            lambda: [extractor.extract(a, rate) for a in audio], args.repeats
        ),
        "NemoMelExtractor.extract_batch (list of clips)": best_time(
            lambda: extractor.extract_batch(list(audio), rate), args.repeats
        ),
    }
    print(f"threads={torch.get_num_threads()} torch={torch.__version__} audio={total:.0f}s "
          f"({n_clips} clips x {args.clip_seconds:g}s)")
    for name, seconds in results.items():
        print(f"{name:50s} {seconds:8.3f} s  {total / seconds:9.0f} s audio/s  (x{total / seconds:.0f} real time)")


if __name__ == "__main__":
    main()
