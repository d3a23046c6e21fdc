"""Combine cut manifests into one, shuffled, in bounded memory (the features stage's train-all file):

    python -m qnet.bin.combine_cuts OUT IN [IN ...] [--shuffle true] [--seed 0] [--bucket-cuts 50000]

e.g. the LibriSpeech train parts, each with its speed-perturbed copies, into
data/fbank/librispeech_cuts_train-all-shuf.jsonl.gz, so that every stretch of the file (and so every
batch drawn through the sampler's shuffle buffer) mixes parts and perturbation factors.

The shuffle is a two-pass external shuffle: pass 1 streams the inputs and sends each cut to one of
ceil(total / --bucket-cuts) temporary buckets at random; pass 2 shuffles each bucket in memory and
appends it to OUT. That is a uniform random permutation, and memory holds one bucket, not the corpus.
Cuts pass through as lhotse's JSON dicts (lhotse.serialization), unchanged. OUT is written atomically.
"""

import argparse
import logging
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

from qnet.utils import PathLike, setup_logger, str2bool


class DuplicateCutError(ValueError):
    """Two inputs (or one input twice) hold the same cut id."""


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output cuts manifest (.jsonl.gz)")
    p.add_argument("inputs", type=Path, nargs="+", help="input cuts manifests (.jsonl or .jsonl.gz)")
    p.add_argument("--shuffle", type=str2bool, default=True, help="shuffle the combined cuts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bucket-cuts", type=int, default=50_000,
                   help="cuts per in-memory bucket of the shuffle (memory bound, about 5 KB a cut)")
    p.add_argument("--log-file", type=Path, default=None)
    return p


def _read(paths: Sequence[PathLike]) -> Iterator[Dict]:
    """Every cut of `paths`, as lhotse JSON dicts, failing on a repeated cut id."""
    from lhotse.serialization import load_jsonl

    seen = set()
    for path in paths:
        for cut in load_jsonl(path):
            if cut["id"] in seen:
                raise DuplicateCutError(f"{path}: cut id {cut['id']} appears earlier in the inputs too")
            seen.add(cut["id"])
            yield cut


def combine_cuts(inputs: Sequence[PathLike], out: PathLike, shuffle: bool = True, seed: int = 0,
                 bucket_cuts: int = 50_000) -> int:
    """Write the cuts of `inputs` to `out` (atomically), shuffled when `shuffle`; returns the count."""
    from lhotse import CutSet
    from lhotse.serialization import load_jsonl

    from qnet.data import count_lines, write_cuts

    missing = [str(p) for p in inputs if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"missing input manifests: {' '.join(missing)}")
    out = Path(out)
    if not shuffle:
        return write_cuts(_read(inputs), out)
    rng = random.Random(seed)
    total = sum(count_lines(p) for p in inputs)
    num_buckets = max(1, math.ceil(total / max(1, bucket_cuts)))
    out.parent.mkdir(parents=True, exist_ok=True)
    bucket_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.buckets.", dir=out.parent))
    try:
        buckets = [bucket_dir / f"{b}.jsonl" for b in range(num_buckets)]
        writers = [CutSet.open_writer(b, overwrite=True) for b in buckets]
        for cut in _read(inputs):
            writers[rng.randrange(num_buckets)].write(cut)
        for w in writers:
            w.close()

        def shuffled():
            for bucket in buckets:
                cuts: List[Dict] = list(load_jsonl(bucket)) if bucket.is_file() else []
                rng.shuffle(cuts)
                yield from cuts
                del cuts  # one bucket in memory at a time

        return write_cuts(shuffled(), out)
    finally:
        shutil.rmtree(bucket_dir, ignore_errors=True)


def main(argv=None) -> int:
    """Entry point; fails when an input is missing or two inputs share a cut id."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log_file)
    start = time.time()
    try:
        n = combine_cuts(args.inputs, args.out, args.shuffle, args.seed, args.bucket_cuts)
    except (FileNotFoundError, DuplicateCutError) as exc:
        logging.error(str(exc))
        return 1
    logging.info(f"{args.out}: {n} cuts from {len(args.inputs)} manifests"
                 f"{' (shuffled)' if args.shuffle else ''} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
