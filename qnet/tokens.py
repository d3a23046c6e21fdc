"""Token tables (k2/icefall `tokens.txt`), text normalization and tokenizers (characters, sentencepiece BPE).

Every token table has the CTC blank `<blk>` at id 0, as k2's ctc_topo requires. Character tables are
`<blk> <space> a..z '` (29 symbols); BPE tables are `<blk> <sos/eos> <unk>` followed by the pieces.
A lang dir's tokens.txt may also carry Kaldi disambiguation symbols `#0 #1 ...` after the model's
tokens; they are graph-only and are not part of the model's output layer.
"""

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from qnet.utils import PathLike, atomic_write_text


BLANK = "<blk>"
SPACE = "<space>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"
LETTERS = "abcdefghijklmnopqrstuvwxyz'"
CHAR_SYMBOLS = [BLANK, SPACE] + list(LETTERS)
_DISAMBIG = re.compile(r"^#\d+$")


def read_symbol_file(path: PathLike) -> List[str]:
    """Symbols of a `SYMBOL ID` file (tokens.txt, words.txt) in id order; ids must be 0..N-1."""
    path = Path(path)
    pairs = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected 'SYMBOL ID', got {line!r}")
        pairs.append((int(parts[1]), parts[0]))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise ValueError(f"{path}: ids must be 0..N-1 without gaps")
    return [s for _, s in pairs]


def write_symbol_file(path: PathLike, symbols: Sequence[str]) -> None:
    """Write `SYMBOL ID` lines (id = position) atomically."""
    atomic_write_text(path, "".join(f"{s} {i}\n" for i, s in enumerate(symbols)))


class TokenTable:
    """Symbols of a CTC model's output layer; `symbols[i]` is the symbol of id i, `<blk>` is 0."""

    def __init__(self, symbols: Iterable[str]):
        self.symbols: List[str] = list(symbols)
        if not self.symbols or self.symbols[0] != BLANK:
            raise ValueError(f"token table must start with {BLANK} at id 0, got {self.symbols[:3]}")
        if len(set(self.symbols)) != len(self.symbols):
            dup = sorted({s for s in self.symbols if self.symbols.count(s) > 1})
            raise ValueError(f"token table has duplicate symbols: {dup}")
        self._ids: Dict[str, int] = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def chars(cls) -> "TokenTable":
        """The English character table: <blk> <space> a..z '."""
        return cls(CHAR_SYMBOLS)

    @classmethod
    def from_file(cls, path: PathLike) -> "TokenTable":
        """Read `SYMBOL ID` lines; disambiguation symbols (#0, #1, ...), which must come last, are skipped."""
        symbols = read_symbol_file(path)
        model_symbols = [s for s in symbols if not _DISAMBIG.match(s)]
        if symbols[: len(model_symbols)] != model_symbols:
            raise ValueError(f"{path}: disambiguation symbols (#0, #1, ...) must come after the model's tokens")
        return cls(model_symbols)

    def to_file(self, path: PathLike) -> None:
        """Write `SYMBOL ID` lines atomically."""
        write_symbol_file(path, self.symbols)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._ids

    def __eq__(self, other) -> bool:
        return isinstance(other, TokenTable) and self.symbols == other.symbols

    def id(self, symbol: str) -> int:
        """Id of `symbol`; KeyError names the symbol."""
        try:
            return self._ids[symbol]
        except KeyError:
            raise KeyError(f"symbol {symbol!r} is not in the token table") from None

    def symbol(self, idx: int) -> str:
        """Symbol of id `idx`."""
        return self.symbols[idx]

    @property
    def blank_id(self) -> int:
        return 0


@dataclass
class NormalizationStats:
    """What text normalization changed, for the logs: characters transliterated and dropped."""

    transliterated: int = 0
    dropped: int = 0
    dropped_chars: Dict[str, int] = field(default_factory=dict)

    def add(self, other: "NormalizationStats") -> None:
        self.transliterated += other.transliterated
        self.dropped += other.dropped
        for c, n in other.dropped_chars.items():
            self.dropped_chars[c] = self.dropped_chars.get(c, 0) + n

    def __str__(self) -> str:
        top = sorted(self.dropped_chars.items(), key=lambda kv: -kv[1])[:10]
        return f"transliterated {self.transliterated} chars, dropped {self.dropped} chars (most: {top})"


# Characters that separate words in running text: mapped to a space, not counted as dropped.
_SEPARATORS = set("-_/\\.,;:!?\"()[]{}<>|~`*+=&^%$#@\t\n\r") | {"\u2013", "\u2014", "\u2026"}
_APOSTROPHES = {"\u2019", "\u2018", "\u02bc", "`", "\u00b4"}


def normalize_text(text: str, alphabet: str = LETTERS) -> Tuple[str, NormalizationStats]:
    """Lowercase, transliterate accents (é -> e) and curly apostrophes, turn punctuation into word
    breaks, drop whatever else `alphabet` cannot write, and squeeze spaces. Returns text and stats."""
    stats = NormalizationStats()
    out = []
    for ch in text.lower():
        if ch in alphabet or ch == " ":
            out.append(ch)
        elif ch in _APOSTROPHES and "'" in alphabet:
            out.append("'")
            stats.transliterated += 1
        elif ch in _SEPARATORS or ch.isspace():
            out.append(" ")
        else:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            base = base.lower()
            if base and all(c in alphabet for c in base):
                out.append(base)
                stats.transliterated += 1
            else:
                stats.dropped += 1
                stats.dropped_chars[ch] = stats.dropped_chars.get(ch, 0) + 1
    return " ".join("".join(out).split()), stats


class CharTokenizer:
    """Characters <-> ids for a `<blk> <space> a..z '`-style table; words are joined by <space>."""

    def __init__(self, table: Optional[TokenTable] = None):
        self.table = table or TokenTable.chars()
        self.space_id = self.table.id(SPACE)
        self.alphabet = "".join(s for s in self.table.symbols if len(s) == 1)

    def normalize(self, text: str) -> Tuple[str, NormalizationStats]:
        """Normalize `text` to what this table can write."""
        return normalize_text(text, self.alphabet)

    def encode(self, text: str) -> List[int]:
        """Ids of already-normalized `text` (KeyError names an unknown character)."""
        ids: List[int] = []
        for w, word in enumerate(text.split()):
            if w:
                ids.append(self.space_id)
            ids.extend(self.table.id(c) for c in word)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids (blanks ignored)."""
        chars = []
        for i in ids:
            i = int(i)
            if i == self.table.blank_id:
                continue
            chars.append(" " if i == self.space_id else self.table.symbol(i))
        return " ".join("".join(chars).split())


class BpeTokenizer:
    """Sentencepiece pieces <-> ids; the table is the model's `id_to_piece` list (<blk> = 0)."""

    def __init__(self, model_path: PathLike, table: Optional[TokenTable] = None):
        import sentencepiece as spm

        self.model_path = Path(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        sp_table = TokenTable(self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size()))
        if table is not None and table != sp_table:
            raise ValueError(f"{model_path}: pieces do not match the given token table")
        self.table = sp_table
        self.alphabet = LETTERS
        # ids that are no text: sentencepiece would print <sos/eos> as a word and <unk> as " ⁇ "
        self.non_text_ids = {self.table.blank_id, self.sp.unk_id()}
        self.non_text_ids.update(self.table.id(s) for s in (SOS_EOS, UNK) if s in self.table)

    def normalize(self, text: str) -> Tuple[str, NormalizationStats]:
        """Normalize `text` to lowercase letters, apostrophes and spaces."""
        return normalize_text(text, self.alphabet)

    def encode(self, text: str) -> List[int]:
        """Piece ids of already-normalized `text`."""
        return list(self.sp.encode(text, out_type=int))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of piece ids; <blk>, <sos/eos> and <unk> are dropped, as they stand for no letters."""
        text = self.sp.decode([int(i) for i in ids if int(i) not in self.non_text_ids])
        return " ".join(text.split())


def train_bpe(transcript: PathLike, vocab_size: int, out_dir: PathLike) -> Path:
    """Train a sentencepiece unigram model with <blk>=0, <sos/eos>=1, <unk>=2 on normalized text
    (one sentence per line); writes out_dir/bpe.model and out_dir/tokens.txt, returns the model path."""
    import sentencepiece as spm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"unigram_{vocab_size}"
    spm.SentencePieceTrainer.train(
        input=str(transcript),
        vocab_size=vocab_size,
        model_type="unigram",
        model_prefix=str(prefix),
        input_sentence_size=100_000_000,
        character_coverage=1.0,
        user_defined_symbols=[BLANK, SOS_EOS],
        unk_id=2,
        bos_id=-1,
        eos_id=-1,
        minloglevel=2,
    )
    model_path = out_dir / "bpe.model"
    Path(f"{prefix}.model").replace(model_path)
    Path(f"{prefix}.vocab").replace(out_dir / "bpe.vocab")
    BpeTokenizer(model_path).table.to_file(out_dir / "tokens.txt")
    return model_path


def load_tokenizer(lang_dir: PathLike) -> Union[CharTokenizer, BpeTokenizer]:
    """Tokenizer of a lang dir: BPE when it holds bpe.model, characters otherwise (from tokens.txt)."""
    lang_dir = Path(lang_dir)
    table = TokenTable.from_file(lang_dir / "tokens.txt")
    if (lang_dir / "bpe.model").is_file():
        return BpeTokenizer(lang_dir / "bpe.model", table)
    return CharTokenizer(table)
