"""Peak memory of building and loading a LibriSpeech-size rescoring G (issue 9).

    python bench/bench_g_memory.py [--num-ngrams 10000000] [--vocab 60000] [--work-dir /tmp/qnet_g_bench]
                                   [--compare-k2-text-parser true] [--phases cache job-load]

Generates a 4-gram ARPA with about --num-ngrams n-grams (all 1- to 4-grams of a random Zipf-distributed
word stream, so every history and back-off suffix exists, as in a real ARPA), then runs each step the
recipe runs in its own process and prints its wall time and peak RSS (VmHWM):

  imports     torch + k2 + qnet.lm imported, nothing else (the floor of the phases below but arpa2fst)
  arpa2fst    qnet.lm.arpa_to_fst_txt (kaldilm; stage 4 of the recipes, once)
  cache       qnet.lm.build_G_cache: G.fst.txt -> G.pt, streamed (steps/decode.sh, once per decode dir)
  k2-text     the old way for comparison: k2.Fsa.from_openfst(f.read()) of the whole text
  job-load    what each parallel decode job does: load_G + with_epsilon_self_loops (both rescorings)

Numbers and the machine go in bench/README.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def generate_arpa(arpa: Path, words_txt: Path, num_ngrams: int, vocab: int, seed: int = 0) -> dict:
    """Write a consistent 4-gram ARPA with >= num_ngrams n-grams and its words.txt; returns the counts."""
    import numpy as np

    assert vocab < 2**16 - 2, "word ids are packed 16 bits each"
    rng = np.random.default_rng(seed)
    tokens_needed = max(1000, num_ngrams // 3)
    for _ in range(6):
        stream = (rng.zipf(1.3, size=tokens_needed) - 1) % vocab
        stream = stream.astype(np.uint64) + 1  # ids 1..vocab (0 unused)
        grams = []
        for order in range(1, 5):
            packed = np.zeros(len(stream) - order + 1, dtype=np.uint64)
            for k in range(order):
                packed = (packed << np.uint64(16)) | stream[k:len(stream) - order + 1 + k]
            grams.append(np.unique(packed))
        total = sum(len(g) for g in grams)
        if total >= num_ngrams:
            break
        tokens_needed = int(tokens_needed * num_ngrams / total * 1.1)
    names = np.array(["<unused>"] + [f"w{i}" for i in range(1, vocab + 1)], dtype=object)
    counts = {}
    with open(arpa, "w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        # unigrams: every word (those never seen too), plus <s> and </s>
        counts[1] = vocab + 2
        for order in range(2, 5):
            counts[order] = len(grams[order - 1])
        for order in range(1, 5):
            f.write(f"ngram {order}={counts[order]}\n")
        f.write("\n\\1-grams:\n")
        f.write("-99\t<s>\t-0.5\n-1.5\t</s>\n")
        logp = rng.uniform(-7, -2, size=vocab)
        bo = rng.uniform(-1, 0, size=vocab)
        for i in range(vocab):
            f.write(f"{logp[i]:.4f}\tw{i + 1}\t{bo[i]:.4f}\n")
        for order in range(2, 5):
            f.write(f"\n\\{order}-grams:\n")
            g = grams[order - 1]
            chunk = 1 << 20
            for lo in range(0, len(g), chunk):
                part = g[lo:lo + chunk]
                ids = [(part >> np.uint64(16 * (order - 1 - k))) & np.uint64(0xFFFF) for k in range(order)]
                text = names[ids[0].astype(np.int64)]
                for k in range(1, order):
                    text = text + " " + names[ids[k].astype(np.int64)]
                lp = rng.uniform(-5, -0.1, size=len(part))
                if order < 4:
                    b = rng.uniform(-1, 0, size=len(part))
                    f.write("".join(f"{p:.4f}\t{t}\t{x:.4f}\n" for p, t, x in zip(lp, text, b)))
                else:
                    f.write("".join(f"{p:.4f}\t{t}\n" for p, t in zip(lp, text)))
        f.write("\n\\end\\\n")
    with open(words_txt, "w", encoding="utf-8") as f:
        f.write("<eps> 0\n")
        for i in range(1, vocab + 1):
            f.write(f"w{i} {i}\n")
        f.write(f"#0 {vocab + 1}\n<s> {vocab + 2}\n</s> {vocab + 3}\n")
    return {"ngrams": counts, "total": sum(counts.values())}


def run_phase(phase: str, work: Path) -> dict:
    """One measured step, in this (fresh) process."""
    sys.path.insert(0, str(ROOT))
    arpa, words, fst = work / "G_4_gram.arpa", work / "words.txt", work / "G_4_gram.fst.txt"
    first_disambig = sum(1 for _ in open(words)) - 3  # #0's id (see generate_arpa)
    start = time.time()
    info = {}
    if phase == "imports":  # the floor every other torch/k2 phase starts from
        import k2  # noqa: F401
        import torch  # noqa: F401

        import qnet.lm  # noqa: F401
    elif phase == "arpa2fst":
        from qnet.lm import arpa_to_fst_txt

        arpa_to_fst_txt(arpa, words, fst)
        info["fst_txt_mb"] = fst.stat().st_size / 1e6
    elif phase == "cache":
        from qnet.lm import G_cache_path, build_G_cache

        cache = G_cache_path(fst)
        if cache.exists():
            cache.unlink()
        build_G_cache(fst, first_disambig)
        info["cache_mb"] = cache.stat().st_size / 1e6
    elif phase == "k2-text":
        import k2

        with open(fst, encoding="utf-8") as f:
            G = k2.Fsa.from_openfst(f.read(), acceptor=False)
        info["arcs"] = G.num_arcs
    elif phase == "job-load":
        from qnet.lm import load_G, with_epsilon_self_loops

        G = load_G(fst, first_disambig)
        G_loops = with_epsilon_self_loops(G)
        info["arcs"] = G.num_arcs
        info["arcs_with_loops"] = G_loops.num_arcs
    else:
        raise ValueError(phase)
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    info.update(phase=phase, seconds=round(time.time() - start, 1), cpu_s=round(usage.ru_utime + usage.ru_stime, 1),
                peak_rss_mb=round(peak_rss_mb(), 1))
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-ngrams", type=int, default=10_000_000)
    p.add_argument("--vocab", type=int, default=60_000)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/qnet_g_bench"))
    p.add_argument("--compare-k2-text-parser", default="true", choices=["true", "false"])
    p.add_argument("--phases", nargs="+", default=None,
                   help="only these phases (imports arpa2fst cache k2-text job-load), e.g. after a change")
    p.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.work_dir)))
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    arpa = args.work_dir / "G_4_gram.arpa"
    meta = args.work_dir / "arpa.json"
    want = {"num_ngrams": args.num_ngrams, "vocab": args.vocab}
    if not (arpa.is_file() and meta.is_file() and json.loads(meta.read_text()).get("want") == want):
        start = time.time()
        counts = generate_arpa(arpa, args.work_dir / "words.txt", args.num_ngrams, args.vocab)
        meta.write_text(json.dumps({"want": want, **counts}))
        print(f"generated {arpa}: {counts['total']} n-grams {counts['ngrams']}, "
              f"{arpa.stat().st_size / 1e6:.0f} MB in {time.time() - start:.0f} s", flush=True)
    counts = json.loads(meta.read_text())
    print(f"ARPA: {counts['total']} n-grams {counts['ngrams']} ({arpa.stat().st_size / 1e6:.0f} MB)")
    phases = ["imports", "arpa2fst", "cache"] + (["k2-text"] if args.compare_k2_text_parser == "true" else []) + ["job-load"]
    if args.phases:
        phases = [ph for ph in phases if ph in args.phases]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for phase in phases:
        res = subprocess.run([sys.executable, __file__, "--phase", phase, "--work-dir", str(args.work_dir)],
                             capture_output=True, text=True, env=env)
        if res.returncode != 0:
            print(f"{phase}: FAILED\n{res.stderr[-3000:]}")
            sys.exit(1)
        info = json.loads(res.stdout.strip().splitlines()[-1])
        extra = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("phase", "seconds", "cpu_s", "peak_rss_mb"))
        print(f"{phase:9s} {info['seconds']:8.1f} s ({info['cpu_s']:7.1f} s CPU in all)   peak RSS "
              f"{info['peak_rss_mb']:8.0f} MB   {extra}", flush=True)


if __name__ == "__main__":
    main()
