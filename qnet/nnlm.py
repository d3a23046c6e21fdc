"""Word-level neural LM for n-best rescoring: a causal Transformer (or LSTM) on the words of an LM text,
its training (tqdm, tensorboard, a PNG of the curves, atomic resumable checkpoints, DDP) and sentence
scoring.

Units are words, not BPE pieces: the lattices qnet rescores carry word ids (words.txt), so a word LM
scores an n-best sentence with no re-tokenization, and its perplexity is directly comparable with the
n-gram's. The vocabulary is the `vocab_size` most frequent words of the training part of the text
(0: all of them) plus `<eos>` (id 0; it also starts every sentence) and `<unk>` (id 1). A word outside
the vocabulary is scored as `<unk>`, i.e. with the probability of the whole unknown class; the
n-gram LM treats out-of-vocabulary words the same way.

Text: one sentence per line (plain or .gz), normalized with qnet.tokens.normalize_text (lowercase,
as words.txt). Every `valid_interval`-th sentence (at most `max_valid` of them) is held out and the
perplexity on it (per word, `</s>` counted as a word, as SRILM/kenlm report it) is logged after every
epoch. The encoded corpus is cached in the exp dir (`data.pt`), keyed by the text's size and mtime.

Checkpoints are qnet.checkpoint's names (`epoch-E.pt`, `checkpoint-S.pt`) written with
qnet.utils.atomic_torch_save, holding model, optimizer, scheduler, GradScaler, every rank's RNG state,
epoch and position in it. The epoch's batch order is a function of (seed, epoch), so a run killed at
any moment and started again with the same command continues where its newest checkpoint was taken
and, on CPU, ends with the same parameters as an uninterrupted run. The best epoch by held-out
perplexity is copied to `nnlm.pt` (model only), the file decoding reads.
"""

import argparse
import contextlib
import gzip
import logging
import math
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from qnet.checkpoint import save_step_checkpoint
from qnet.utils import PathLike, atomic_output, atomic_torch_save, str2bool

EOS, UNK = "<eos>", "<unk>"
EOS_ID, UNK_ID = 0, 1
NNLM_FORMAT = 1

# Named sizes (--model-size); any field can be overridden on the command line.
SIZES: Dict[str, Dict[str, Any]] = {
    "tiny": dict(dim=64, num_layers=2, num_heads=2, ff_dim=256),          # CI / egs/mini (~1 min on CPU)
    "small": dict(dim=256, num_layers=4, num_heads=4, ff_dim=1024),       # WSJ-sized texts
    "base": dict(dim=512, num_layers=6, num_heads=8, ff_dim=2048),        # LibriSpeech LM corpus, 1 GPU
    "large": dict(dim=768, num_layers=12, num_heads=12, ff_dim=3072),     # LibriSpeech LM corpus, several GPUs
}


# ----------------------------------------------------------------------------------------------
# Model


@dataclass
class NnlmConfig:
    """Architecture of a word LM: `kind` transformer (pre-norm, causal) or lstm; tied embeddings."""

    vocab_size: int
    kind: str = "transformer"
    dim: int = 512
    num_layers: int = 6
    num_heads: int = 8
    ff_dim: int = 2048
    dropout: float = 0.1

    def __post_init__(self):
        if self.kind not in ("transformer", "lstm"):
            raise ValueError(f"NNLM kind must be transformer or lstm, not {self.kind!r}")
        if self.kind == "transformer" and self.dim % self.num_heads:
            raise ValueError(f"NNLM dim {self.dim} is not a multiple of num_heads {self.num_heads}")


def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """(length, dim) sinusoidal position encodings (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32, device=device).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class WordLM(nn.Module):
    """Causal word LM. forward(tokens (B, L) int64) -> logits (B, L, V): position t predicts token t+1.

    Padding goes at the end of a row and, the model being causal, never changes the real positions."""

    def __init__(self, config: NnlmConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        nn.init.normal_(self.embed.weight, std=c.dim ** -0.5)
        self.dropout = nn.Dropout(c.dropout)
        if c.kind == "transformer":
            layer = nn.TransformerEncoderLayer(c.dim, c.num_heads, c.ff_dim, c.dropout, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, c.num_layers, norm=nn.LayerNorm(c.dim),
                                                 enable_nested_tensor=False)
        else:
            self.encoder = nn.LSTM(c.dim, c.dim, c.num_layers, batch_first=True,
                                   dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))  # output layer: tied embedding + bias

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        if self.config.kind == "transformer":
            L = tokens.shape[1]
            x = x * math.sqrt(self.config.dim) + sinusoidal_positions(L, self.config.dim, tokens.device).to(x.dtype)
            causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=tokens.device), diagonal=1)
            x = self.encoder(self.dropout(x), mask=causal)
        else:
            x, _ = self.encoder(self.dropout(x))
        return F.linear(self.dropout(x), self.embed.weight, self.bias)


def build_nnlm(vocab_size: int, size: str = "base", kind: str = "transformer", **overrides) -> WordLM:
    """A WordLM of a named size (tiny, small, base, large) with optional field overrides."""
    if size not in SIZES:
        raise ValueError(f"unknown NNLM size {size!r}; choose from {', '.join(SIZES)}")
    fields = {**SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}
    return WordLM(NnlmConfig(vocab_size=vocab_size, kind=kind, **fields))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def pad_batch(seqs: Sequence[Sequence[int]], device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inputs `<eos> w1 .. wn` and targets `w1 .. wn <eos>` (B, L), targets padded with -100."""
    L = max(len(s) for s in seqs) + 1
    inputs = torch.full((len(seqs), L), EOS_ID, dtype=torch.int64)
    targets = torch.full((len(seqs), L), -100, dtype=torch.int64)
    for i, s in enumerate(seqs):
        t = torch.as_tensor(list(s), dtype=torch.int64)
        inputs[i, 1: len(s) + 1] = t
        targets[i, : len(s)] = t
        targets[i, len(s)] = EOS_ID
    return inputs.to(device), targets.to(device)


def token_nll(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, L) negative log-probabilities of the targets (0 at padding), computed in float32."""
    logits = model(inputs).float()
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return nll


# ----------------------------------------------------------------------------------------------
# Vocabulary and text


class Vocab:
    """Word <-> id of an NNLM: `<eos>`=0, `<unk>`=1, then words by decreasing count."""

    def __init__(self, words: Sequence[str]):
        if list(words[:2]) != [EOS, UNK]:
            raise ValueError(f"an NNLM vocabulary starts with {EOS} {UNK}, got {list(words[:2])}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: Sequence[str]) -> List[int]:
        """Word ids, `<unk>` for words outside the vocabulary."""
        return [self.index.get(w, UNK_ID) for w in words]

    @classmethod
    def from_counts(cls, counts: Counter, size: int = 0) -> "Vocab":
        """The `size` most frequent words (0: all), ties broken alphabetically."""
        ranked = sorted((w for w in counts if w not in (EOS, UNK)), key=lambda w: (-counts[w], w))
        return cls([EOS, UNK] + (ranked[:size] if size > 0 else ranked))


_CLEAN_LINE = re.compile(r"^[a-z' ]*$")


def read_sentences(path: PathLike) -> Iterator[List[str]]:
    """Normalized word lists of an LM text (plain or .gz), empty lines skipped."""
    from qnet.tokens import normalize_text

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip().lower()
            if not _CLEAN_LINE.match(line):  # the fast path covers an already normalized corpus
                line = normalize_text(line)[0]
            words = line.split()
            if words:
                yield words


@dataclass
class EncodedText:
    """Sentences as one flat int32 tensor of word ids and (N+1) offsets."""

    ids: torch.Tensor
    offsets: torch.Tensor

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def sentence(self, i: int) -> List[int]:
        return self.ids[int(self.offsets[i]): int(self.offsets[i + 1])].tolist()

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]]) -> "EncodedText":
        lens = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        offsets = torch.zeros(len(seqs) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lens, 0)
        ids = torch.tensor([w for s in seqs for w in s], dtype=torch.int32)
        return cls(ids, offsets)


def prepare_text(path: PathLike, vocab_size: int, valid_interval: int, max_valid: int, max_len: int,
                 max_sentences: int = 0) -> Dict[str, Any]:
    """Read, split, count and encode an LM text: {"vocab", "train", "valid", "stats"}.

    Sentence i (0-based) is held out when i % valid_interval == 0 and fewer than max_valid are held out;
    training sentences longer than max_len words are dropped (counted)."""
    train_words: List[List[str]] = []
    valid_words: List[List[str]] = []
    counts: Counter = Counter()
    dropped = 0
    for i, words in enumerate(read_sentences(path)):
        if max_sentences and i >= max_sentences:
            break
        if valid_interval > 0 and i % valid_interval == 0 and len(valid_words) < max_valid:
            valid_words.append(words)
        elif len(words) > max_len:
            dropped += 1
        else:
            counts.update(words)
            train_words.append(words)
    if not train_words:
        raise ValueError(f"{path}: no training sentences (empty text, or every sentence longer than {max_len} words)")
    vocab = Vocab.from_counts(counts, vocab_size)
    train = EncodedText.from_lists([vocab.encode(w) for w in train_words])
    valid = EncodedText.from_lists([vocab.encode(w) for w in valid_words])
    in_vocab = sum(counts[w] for w in vocab.words[2:])
    stats = {"train_sentences": len(train), "train_words": int(train.ids.numel()), "valid_sentences": len(valid),
             "valid_words": int(valid.ids.numel()), "dropped_long": dropped, "vocab": len(vocab),
             "train_oov_rate": 1.0 - in_vocab / max(1, sum(counts.values())),
             "valid_oov_rate": float((valid.ids == UNK_ID).float().mean()) if valid.ids.numel() else 0.0}
    return {"vocab": vocab.words, "train": train, "valid": valid, "stats": stats}


def epoch_batches(lengths: torch.Tensor, epoch: int, seed: int, max_tokens: int, world_size: int = 1,
                  rank: int = 0, shuffle: bool = True, pool: int = 50) -> List[torch.Tensor]:
    """This rank's batches (sentence-index tensors) for `epoch`: a (seed, epoch) permutation, cut into
    pools of about `pool` batches, each sorted by length and cut into batches of at most `max_tokens`
    padded tokens (a longer sentence gets a batch of its own); the batch order is shuffled again and
    every rank gets the same number of batches (the remainder is dropped)."""
    n = lengths.numel()
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    mean_len = float(lengths.float().mean()) + 1 if n else 1.0
    pool_size = max(1, int(pool * max_tokens / mean_len))
    batches: List[torch.Tensor] = []
    for lo in range(0, n, pool_size):
        idx = order[lo: lo + pool_size]
        idx = idx[torch.argsort(lengths[idx], descending=True, stable=True)] if shuffle else idx
        lens = (lengths[idx] + 1).tolist()
        start, longest = 0, 0
        for j, L in enumerate(lens):
            longest = max(longest, L)
            if j > start and longest * (j - start + 1) > max_tokens:
                batches.append(idx[start:j])
                start, longest = j, L
        if start < len(lens):
            batches.append(idx[start:])
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    if world_size > 1:
        usable = len(batches) // world_size * world_size if shuffle else len(batches)
        batches = batches[rank:usable:world_size]
    return batches


# ----------------------------------------------------------------------------------------------
# Scoring (rescoring)


def load_nnlm(path: PathLike, device="cpu") -> Tuple[WordLM, Vocab]:
    """The model (eval mode) and vocabulary of an NNLM checkpoint (nnlm.pt or a training checkpoint)."""
    from qnet.model.checkpoint import torch_load

    ckpt = torch_load(path, map_location="cpu")
    if not isinstance(ckpt, dict) or ckpt.get("qnet_nnlm") != NNLM_FORMAT:
        raise ValueError(f"{path} is not a qnet NNLM checkpoint (written by qnet.bin.train_nnlm)")
    model = WordLM(NnlmConfig(**ckpt["config"]))
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    return model.to(device).eval(), Vocab(ckpt["vocab"])


class NnlmScorer:
    """Natural-log probabilities of whole sentences (`</s>` included), in batches of at most `max_tokens`
    padded tokens, longest first."""

    def __init__(self, model: WordLM, vocab: Vocab, max_tokens: int = 20000):
        self.model, self.vocab, self.max_tokens = model.eval(), vocab, max_tokens
        self.device = next(model.parameters()).device

    @classmethod
    def from_file(cls, path: PathLike, device="cpu", max_tokens: int = 20000) -> "NnlmScorer":
        model, vocab = load_nnlm(path, device)
        return cls(model, vocab, max_tokens)

    def id_map(self, symbols: Sequence[str]) -> List[int]:
        """NNLM id of each symbol of a words.txt (index = word id)."""
        return self.vocab.encode(symbols)

    @torch.no_grad()
    def score(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        """(N,) float64 log P(sentence) of NNLM-id sentences."""
        out = torch.zeros(len(seqs), dtype=torch.float64)
        if not seqs:
            return out
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        lo = 0
        while lo < len(order):
            width = len(seqs[order[lo]]) + 1
            hi = lo + max(1, self.max_tokens // width)
            idx = order[lo:hi]
            inputs, targets = pad_batch([seqs[i] for i in idx], self.device)
            nll = token_nll(self.model, inputs, targets).sum(dim=1).double().cpu()
            out[torch.tensor(idx)] = -nll
            lo = hi
        return out


# ----------------------------------------------------------------------------------------------
# Training


def add_nnlm_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `python -m qnet.bin.train_nnlm`."""
    from qnet.trainer import add_run_arguments

    g = p.add_argument_group("data")
    g.add_argument("--text", required=True, help="LM text, one sentence per line (plain or .gz)")
    g.add_argument("--vocab-size", type=int, default=0, help="most frequent words kept (0: all)")
    g.add_argument("--valid-interval", type=int, default=100, help="every N-th sentence is held out")
    g.add_argument("--max-valid", type=int, default=10000, help="at most this many held-out sentences")
    g.add_argument("--max-len", type=int, default=100, help="drop training sentences longer than this (words)")
    g.add_argument("--max-sentences", type=int, default=0, help="read only the first N sentences (0: all)")
    g.add_argument("--max-tokens", type=int, default=8000, help="padded tokens per batch (per GPU)")
    g = p.add_argument_group("model")
    g.add_argument("--model-size", choices=sorted(SIZES), default="base")
    g.add_argument("--kind", choices=("transformer", "lstm"), default="transformer")
    g.add_argument("--dim", type=int, default=None)
    g.add_argument("--num-layers", type=int, default=None)
    g.add_argument("--num-heads", type=int, default=None)
    g.add_argument("--ff-dim", type=int, default=None)
    g.add_argument("--dropout", type=float, default=None)
    g = p.add_argument_group("optimization")
    g.add_argument("--num-epochs", type=int, default=10)
    g.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--warmup-steps", type=int, default=1000)
    g.add_argument("--grad-clip", type=float, default=1.0)
    g.add_argument("--amp", choices=("auto", "fp16", "bf16", "none"), default="auto",
                   help="mixed precision (as qnet.bin.train): auto = fp16 on CUDA, none on CPU; bf16 also on CPU")
    g = p.add_argument_group("run")
    add_run_arguments(g)
    g.add_argument("--log-interval", type=int, default=50)
    g.add_argument("--tensorboard", type=str2bool, default=True)
    g.add_argument("--exit-after-steps", type=int, default=0, help="(testing) stop this run after N steps")


def _text_key(path: PathLike, args: argparse.Namespace) -> Dict[str, Any]:
    st = Path(path).stat()
    return {"text": str(Path(path).resolve()), "size": st.st_size, "mtime": int(st.st_mtime),
            "vocab_size": args.vocab_size, "valid_interval": args.valid_interval, "max_valid": args.max_valid,
            "max_len": args.max_len, "max_sentences": args.max_sentences}


class NnlmTrainer:
    """One training process of a word LM (see the module docstring); `run()` trains to the last epoch."""

    def __init__(self, args: argparse.Namespace):
        from qnet.trainer import resolve_amp, setup_device, start_run_log, tensorboard_writer

        self.args = args
        self.dist, self.device = setup_device(args.device)
        self.exp_dir = Path(args.exp_dir)
        start_run_log(self.exp_dir, self.dist, self.device, "train_nnlm", args)
        if args.num_threads > 0:
            torch.set_num_threads(args.num_threads)
        self.amp = resolve_amp(args.amp, self.device)
        torch.manual_seed(args.seed + self.dist.rank)
        self._setup_data()
        self._setup_model()
        self.step, self.epoch, self.batches_done = 0, 1, 0
        self.history: List[Dict[str, Any]] = []
        self.best = {"epoch": 0, "ppl": float("inf")}
        self._maybe_resume()
        self.tb = tensorboard_writer(self.exp_dir, self.dist, args.tensorboard, self.step)

    def _barrier(self) -> None:
        if self.dist.is_distributed:
            import torch.distributed as dist

            dist.barrier()

    def _setup_data(self) -> None:
        from qnet.model.checkpoint import torch_load

        a = self.args
        cache = self.exp_dir / "data.pt"
        key = _text_key(a.text, a)
        if self.dist.is_main:
            data = torch_load(cache) if cache.is_file() else None
            if data is None or data.get("key") != key:
                t0 = time.time()
                data = prepare_text(a.text, a.vocab_size, a.valid_interval, a.max_valid, a.max_len, a.max_sentences)
                data = {"key": key, "vocab": data["vocab"], "stats": data["stats"],
                        "train": asdict(data["train"]), "valid": asdict(data["valid"])}
                atomic_torch_save(data, cache)
                logging.info("encoded %s in %.0f s into %s", a.text, time.time() - t0, cache)
        self._barrier()
        if not self.dist.is_main:
            data = torch_load(cache)
        self.vocab = Vocab(data["vocab"])
        self.train_text = EncodedText(**data["train"])
        self.valid_text = EncodedText(**data["valid"])
        s = data["stats"]
        logging.info("LM text %s: %d training sentences (%d words, %d longer than %d words dropped), %d held out "
                     "(%d words); vocabulary %d (OOV rate: training %.2f%%, held-out %.2f%%)",
                     a.text, s["train_sentences"], s["train_words"], s["dropped_long"], a.max_len,
                     s["valid_sentences"], s["valid_words"], s["vocab"], 100 * s["train_oov_rate"],
                     100 * s["valid_oov_rate"])
        self.steps_per_epoch = len(self._batches(1))

    def _batches(self, epoch: int) -> List[torch.Tensor]:
        return epoch_batches(self.train_text.lengths(), epoch, self.args.seed, self.args.max_tokens,
                             self.dist.world_size, self.dist.rank)

    def _setup_model(self) -> None:
        from qnet.optim import CosineWarmupScheduler
        from qnet.trainer import make_grad_scaler

        a = self.args
        self.model = build_nnlm(len(self.vocab), a.model_size, a.kind, dim=a.dim, num_layers=a.num_layers,
                                num_heads=a.num_heads, ff_dim=a.ff_dim, dropout=a.dropout).to(self.device)
        logging.info("NNLM %s %s: %s, %d parameters", a.kind, a.model_size, asdict(self.model.config),
                     count_parameters(self.model))
        self.ddp_model = self.model
        if self.dist.is_distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self.ddp_model = DDP(self.model, device_ids=ids)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=a.lr, betas=(0.9, 0.98),
                                           weight_decay=a.weight_decay)
        max_steps = max(1, self.steps_per_epoch * a.num_epochs)
        self.scheduler = CosineWarmupScheduler(self.optimizer, a.warmup_steps, max_steps)
        self.scaler = make_grad_scaler(self.device.type, enabled=self.amp == "fp16")
        logging.info("%d batches per epoch and rank (at most %d padded tokens each); schedule %d steps, warmup %d",
                     self.steps_per_epoch, a.max_tokens, max_steps, a.warmup_steps)

    def _autocast(self):
        from qnet.trainer import AMP_DTYPES

        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AMP_DTYPES[self.amp])

    # -- checkpoints ------------------------------------------------------------------------------

    def model_dict(self) -> Dict[str, Any]:
        """What decoding needs: format, config, vocabulary, weights."""
        return {"qnet_nnlm": NNLM_FORMAT, "config": asdict(self.model.config), "vocab": self.vocab.words,
                "model": self.model.state_dict()}

    def save_checkpoint(self, path: Path) -> None:
        """A training checkpoint (rank 0 writes it; every rank contributes its RNG state)."""
        from qnet.checkpoint import get_rng_state
        from qnet.trainer import _gather_objects

        rng = _gather_objects(get_rng_state(), self.dist)
        if not self.dist.is_main:
            return
        atomic_torch_save({**self.model_dict(), "optimizer": self.optimizer.state_dict(),
                           "scheduler": self.scheduler.state_dict(), "grad_scaler": self.scaler.state_dict(),
                           "rng": rng, "step": self.step, "epoch": self.epoch, "batches_done": self.batches_done,
                           "world_size": self.dist.world_size, "history": self.history, "best": self.best,
                           "args": vars(self.args)}, path)

    def _maybe_resume(self) -> None:
        from qnet.checkpoint import latest_checkpoint, remove_stale_temporaries, set_rng_state
        from qnet.model.checkpoint import torch_load

        if self.dist.is_main and self.exp_dir.is_dir() and remove_stale_temporaries(self.exp_dir):
            logging.info("removed temporary files of an interrupted save")
        path = latest_checkpoint(self.exp_dir) if self.exp_dir.is_dir() else None
        if path is None:
            return
        ckpt = torch_load(path)
        if ckpt.get("vocab") != self.vocab.words or ckpt.get("config") != asdict(self.model.config):
            raise RuntimeError(f"{path}: vocabulary or model differs from this command's; use another --exp-dir")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["grad_scaler"])
        self.step, self.epoch, self.batches_done = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batches_done"])
        self.history, self.best = list(ckpt["history"]), dict(ckpt["best"])
        if len(ckpt["rng"]) == self.dist.world_size:
            set_rng_state(ckpt["rng"][self.dist.rank])
        else:
            logging.warning("checkpoint written by %d ranks, now %d: RNG states and batch sharding differ",
                            len(ckpt["rng"]), self.dist.world_size)
        logging.info("resumed from %s: step %d, epoch %d after %d batches", path, self.step, self.epoch,
                     self.batches_done)

    # -- training ---------------------------------------------------------------------------------

    def _sums(self, values: List[float]) -> List[float]:
        from qnet.trainer import _all_reduce

        return _all_reduce(values, self.device, self.dist)

    def train_one_epoch(self) -> bool:
        """The rest of epoch `self.epoch`; False when --exit-after-steps stopped it."""
        from tqdm import tqdm

        from qnet.trainer import apply_gradients

        a = self.args
        self.ddp_model.train()
        batches = self._batches(self.epoch)
        bar = tqdm(total=len(batches), initial=self.batches_done, desc=f"nnlm epoch {self.epoch}",
                   disable=not self.dist.is_main, dynamic_ncols=True,
                   mininterval=2.0 if sys.stderr.isatty() else 30.0)
        interval = [0.0, 0.0, time.time()]  # nll, tokens, start
        steps_this_run = 0
        for idx in batches[self.batches_done:]:
            inputs, targets = pad_batch([self.train_text.sentence(i) for i in idx.tolist()], self.device)
            with self._autocast():
                nll = token_nll(self.ddp_model, inputs, targets)
            tokens = float((targets >= 0).sum())
            loss_sum = nll.sum()
            total_nll, total_tokens, finite = self._sums([float(loss_sum.detach()), tokens,
                                                          float(torch.isfinite(loss_sum).item())])
            updated = False
            if finite == self.dist.world_size:
                # mean per token over all ranks (DDP averages gradients over ranks); a non-finite gradient
                # (fp16 overflow) skips the update
                _, updated = apply_gradients(loss_sum * self.dist.world_size / total_tokens, self.model,
                                             self.optimizer, self.scaler, a.grad_clip)
            if updated:
                interval[0] += total_nll
                interval[1] += total_tokens
            else:
                logging.warning("non-finite loss or gradient at step %d: update skipped", self.step + 1)
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self.step += 1
            self.batches_done += 1
            steps_this_run += 1
            bar.update(1)
            if self.step % a.log_interval == 0 and interval[1] > 0:
                loss = interval[0] / interval[1]
                speed = interval[1] / max(time.time() - interval[2], 1e-9)
                bar.set_postfix(loss=f"{loss:.3f}", ppl=f"{math.exp(min(loss, 50)):.1f}", lr=f"{lr:.2e}")
                logging.info("epoch %d step %d: loss %.4f (ppl %.1f), lr %.3e, %.0f tokens/s", self.epoch, self.step,
                             loss, math.exp(min(loss, 50)), lr, speed)
                self.history.append({"kind": "train", "step": self.step, "epoch": self.epoch, "loss": loss, "lr": lr})
                if self.tb is not None:
                    self.tb.add_scalar("train/loss", loss, self.step)
                    self.tb.add_scalar("train/lr", lr, self.step)
                    self.tb.add_scalar("train/tokens_per_second", speed, self.step)
                interval = [0.0, 0.0, time.time()]
            if a.save_every_n > 0 and self.step % a.save_every_n == 0:
                save_step_checkpoint(self.save_checkpoint, self.exp_dir, self.step, a.keep_last_k, self.dist.is_main)
            if a.exit_after_steps > 0 and steps_this_run >= a.exit_after_steps:
                bar.close()
                return False
        bar.close()
        return True

    @torch.no_grad()
    def validate(self) -> Optional[float]:
        """Held-out perplexity per word (`</s>` counted) over all ranks' shares; None without held-out text."""
        if len(self.valid_text) == 0:
            return None
        was_training = self.model.training
        self.model.eval()
        nll = tokens = 0.0
        for idx in epoch_batches(self.valid_text.lengths(), 0, 0, self.args.max_tokens, self.dist.world_size,
                                 self.dist.rank, shuffle=False):
            inputs, targets = pad_batch([self.valid_text.sentence(i) for i in idx.tolist()], self.device)
            with self._autocast():
                nll += float(token_nll(self.model, inputs, targets).sum())
            tokens += float((targets >= 0).sum())
        nll, tokens = self._sums([nll, tokens])
        self.model.train(was_training)
        return math.exp(nll / max(tokens, 1.0))

    def run(self) -> None:
        """Train to --num-epochs (or --exit-after-steps), validating and checkpointing every epoch."""
        from qnet.checkpoint import remove_old_step_checkpoints

        a = self.args
        while self.epoch <= a.num_epochs:
            t0 = time.time()
            if not self.train_one_epoch():
                logging.info("stopping after %d steps of this run (--exit-after-steps)", a.exit_after_steps)
                return self._close()
            epoch, ppl = self.epoch, self.validate()
            self.epoch += 1
            self.batches_done = 0
            msg = f"epoch {epoch} done in {time.time() - t0:.0f} s (step {self.step})"
            if ppl is not None:
                msg += f": held-out perplexity {ppl:.2f}"
                self.history.append({"kind": "valid", "step": self.step, "epoch": epoch, "ppl": ppl})
                if self.tb is not None:
                    self.tb.add_scalar("valid/perplexity", ppl, self.step)
                if ppl < self.best["ppl"]:
                    self.best = {"epoch": epoch, "ppl": ppl}
            logging.info(msg)
            self.save_checkpoint(self.exp_dir / f"epoch-{epoch}.pt")
            if self.dist.is_main and (ppl is None or self.best["epoch"] == epoch):
                atomic_torch_save(self.model_dict(), self.exp_dir / "nnlm.pt")
        if self.dist.is_main:
            remove_old_step_checkpoints(self.exp_dir, a.keep_last_k)
            if self.history:
                plot_nnlm_curves(self.history, self.exp_dir / "curves.png")
            logging.info("done: %d steps; nnlm.pt is epoch %d (held-out perplexity %.2f)", self.step,
                         self.best["epoch"], self.best["ppl"])
        self._close()

    def _close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.dist.is_distributed:
            from qnet.trainer import leave_process_group

            leave_process_group(self)


def plot_nnlm_curves(history: List[Dict[str, Any]], png_path: Path) -> None:
    """PNG of the training loss, learning rate and held-out perplexity against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if h["kind"] == "train"]
    valid = [h for h in history if h["kind"] == "valid"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot([h["step"] for h in train], [h["loss"] for h in train], lw=1)
    axes[0].set_title("training loss (nats per word)")
    axes[1].plot([h["step"] for h in train], [h["lr"] for h in train], lw=1)
    axes[1].set_title("learning rate")
    axes[2].plot([h["step"] for h in valid], [h["ppl"] for h in valid], "o-")
    axes[2].set_title("held-out perplexity")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    with atomic_output(png_path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
