"""Lang directories in icefall's layout: lexicon, words.txt, Kaldi disambiguation symbols, L and L_disambig.

A lang dir holds
  tokens.txt            model tokens (`<blk>` = 0) followed by `#0 #1 ...` (graph-only disambiguation symbols)
  words.txt             `<eps>` 0, the words, then `#0 <s> </s>`
  lexicon.txt           `word tok1 tok2 ...` (characters for char models, sentencepiece pieces for BPE)
  lexicon_disambig.txt  the same with Kaldi's `#k` appended where a spelling is ambiguous
  L.pt, L_disambig.pt   k2 `Fsa.as_dict()` of the lexicon transducer (labels = tokens, aux_labels = words)
  bpe.model             for BPE lang dirs only

Character models write "a b" as `a <space> b`. Their L therefore needs `<space>` between two words and
accepts an optional `<space>` at the start and the end, so greedy and HLG decoding agree on word breaks.
BPE pieces carry the word break in the leading "▁", so their L is a plain loop over words.
"""

import logging
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from qnet.tokens import SPACE, UNK, TokenTable, normalize_text, read_symbol_file, write_symbol_file
from qnet.utils import PathLike, atomic_torch_save, atomic_write_text, import_k2

Lexicon = List[Tuple[str, List[str]]]

EPS = "<eps>"
OOV_WORD = "<UNK>"
BOS_WORD = "<s>"
EOS_WORD = "</s>"
# Words that never get a spelling in a char lexicon (they are in words.txt for G and scoring only).
SPECIAL_WORDS = {EPS, OOV_WORD, BOS_WORD, EOS_WORD, "#0", "!SIL", "<SPOKEN_NOISE>"}


class SymbolTable:
    """A `SYMBOL ID` table (words.txt, tokens.txt with disambiguation symbols), k2-free."""

    def __init__(self, symbols: Sequence[str]):
        self.symbols = list(symbols)
        self._ids = {s: i for i, s in enumerate(self.symbols)}
        if len(self._ids) != len(self.symbols):
            raise ValueError("symbol table has duplicate symbols")

    @classmethod
    def from_file(cls, path: PathLike) -> "SymbolTable":
        """Read a `SYMBOL ID` file whose ids are 0..N-1 (any order)."""
        return cls(read_symbol_file(path))

    def to_file(self, path: PathLike) -> None:
        """Write `SYMBOL ID` lines atomically."""
        write_symbol_file(path, self.symbols)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._ids

    def __getitem__(self, key: Union[str, int]):
        """Id of a symbol, or symbol of an id."""
        if isinstance(key, str):
            try:
                return self._ids[key]
            except KeyError:
                raise KeyError(f"symbol {key!r} is not in the table") from None
        return self.symbols[key]

    def get(self, symbol: str, default: Optional[int] = None) -> Optional[int]:
        """Id of `symbol` or `default`."""
        return self._ids.get(symbol, default)


def read_lexicon(path: PathLike) -> Lexicon:
    """Read `word tok1 tok2 ...` lines; a word without tokens is an error naming the line."""
    path = Path(path)
    lexicon: Lexicon = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise ValueError(f"{path}:{lineno}: word {parts[0]!r} has no pronunciation")
        lexicon.append((parts[0], parts[1:]))
    return lexicon


def write_lexicon(path: PathLike, lexicon: Lexicon) -> None:
    """Write `word tok1 tok2 ...` lines atomically."""
    atomic_write_text(path, "".join(f"{w} {' '.join(p)}\n" for w, p in lexicon))


def add_disambig_symbols(lexicon: Lexicon) -> Tuple[Lexicon, int]:
    """Kaldi's add_lex_disambig.pl: append `#1`, `#2`, ... to spellings that are repeated or are a prefix
    of another spelling, so that L becomes determinizable. `#0` stays reserved for G's back-off.
    Returns (lexicon with disambiguation symbols, highest k used)."""
    count = defaultdict(int)
    for _, prons in lexicon:
        count[" ".join(prons)] += 1
    # Every proper prefix of every spelling.
    is_prefix = set()
    for _, prons in lexicon:
        for i in range(1, len(prons)):
            is_prefix.add(" ".join(prons[:i]))

    max_disambig = 0
    last_used: Dict[str, int] = defaultdict(int)
    out: Lexicon = []
    for word, prons in lexicon:
        key = " ".join(prons)
        if count[key] == 1 and key not in is_prefix:
            out.append((word, list(prons)))
            continue
        last_used[key] += 1
        k = last_used[key]
        max_disambig = max(max_disambig, k)
        out.append((word, list(prons) + [f"#{k}"]))
    return out, max_disambig


def words_from_text(lines: Iterable[str]) -> List[str]:
    """Sorted unique words of already-tokenizable (normalized) text lines."""
    vocab = set()
    for line in lines:
        vocab.update(line.split())
    return sorted(vocab)


def make_word_table(words: Iterable[str]) -> SymbolTable:
    """words.txt: `<eps>` 0, the sorted words (with `<UNK>`), then `#0 <s> </s>`."""
    regular = sorted(set(words) - {EPS, "#0", BOS_WORD, EOS_WORD} | {OOV_WORD})
    return SymbolTable([EPS] + regular + ["#0", BOS_WORD, EOS_WORD])


def char_lexicon(words: Iterable[str], table: TokenTable) -> Lexicon:
    """Spell each word with the character table; words it cannot write are an error naming them."""
    lexicon: Lexicon = []
    bad = []
    for w in words:
        if w in SPECIAL_WORDS:
            continue
        if all(c in table for c in w) and SPACE not in w:
            lexicon.append((w, list(w)))
        else:
            bad.append(w)
    if bad:
        raise ValueError(f"{len(bad)} words cannot be spelled with the character table, e.g. {bad[:5]}")
    return lexicon


def bpe_lexicon(words: Iterable[str], bpe_model: PathLike) -> Lexicon:
    """Spell each word with sentencepiece pieces; `<UNK>` maps to `<unk>`, and so do the letters of a
    word (e.g. from the LM vocabulary) that the BPE model never saw in the training text."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(bpe_model))
    regular = [w for w in words if w not in SPECIAL_WORDS]
    # ids, not out_type=str: an unseen letter must become the <unk> piece, not a piece the model lacks
    spelled = sp.encode(regular)
    lexicon: Lexicon = [(w, [sp.id_to_piece(i) for i in ids]) for w, ids in zip(regular, spelled)]
    with_unk = [w for w, ids in zip(regular, spelled) if sp.unk_id() in ids]
    if with_unk:
        logging.warning(f"{len(with_unk)} words have letters the BPE model never saw and are spelled with "
                        f"{UNK} (e.g. {' '.join(with_unk[:5])})")
    lexicon.append((OOV_WORD, [UNK]))
    return lexicon


def _final_arcs(arcs: List[list], final_states: Iterable[int], final_state: int) -> None:
    for s in final_states:
        arcs.append([s, final_state, -1, -1, 0.0])


def lexicon_to_fsa_arcs(
    lexicon: Lexicon,
    token2id: Dict[str, int],
    word2id: Dict[str, int],
    space_token: Optional[str] = None,
    need_self_loops: bool = False,
) -> List[list]:
    """Arcs `[src, dst, token, word, score]` of L (k2 acceptor format, one final state last).

    Without `space_token` (BPE): state 0 is start and loop; each word goes 0 -> ... -> 0, the word on the
    first arc. With `space_token` (chars): state 0 is start and word start, 1 is "after a word"; words go
    0 -> ... -> 1, 1 -space-> 0 is the space a second word needs, and a space self-loop on 0 accepts
    leading (and repeated) spaces; 0 and 1 are final, so a trailing space and the empty utterance pass.
    No epsilon input arcs, so L o G determinizes cheaply.
    `need_self_loops` adds `#0:#0` self-loops where words start and end (Kaldi fstaddselfloops), so G's
    back-off arcs pass through L_disambig o G."""
    eps = 0
    arcs: List[list] = []
    if space_token is None:
        loop_state, word_end_state, next_state = 0, 0, 1
        final_sources = [0]
    else:
        space = token2id[space_token]
        loop_state, word_end_state, next_state = 0, 1, 2
        arcs.append([loop_state, loop_state, space, eps, 0.0])
        arcs.append([word_end_state, loop_state, space, eps, 0.0])
        final_sources = [loop_state, word_end_state]

    for word, prons in lexicon:
        if not prons:
            raise ValueError(f"word {word!r} has an empty spelling")
        try:
            word_id = word2id[word]
            token_ids = [token2id[p] for p in prons]
        except KeyError as exc:
            raise ValueError(f"lexicon entry {word!r}: {exc.args[0]} is not in the symbol table") from None
        cur = loop_state
        for i, tok in enumerate(token_ids):
            last = i == len(token_ids) - 1
            dst = word_end_state if last else next_state
            if not last:
                next_state += 1
            arcs.append([cur, dst, tok, word_id if i == 0 else eps, 0.0])
            cur = dst

    if need_self_loops:
        # Where G may take a back-off arc: before a word and, for chars, also right after one (the
        # utterance may end there without a trailing space).
        disambig_token, disambig_word = token2id["#0"], word2id["#0"]
        for state in sorted({loop_state, word_end_state}):
            arcs.append([state, state, disambig_token, disambig_word, 0.0])

    final_state = next_state
    _final_arcs(arcs, final_sources, final_state)
    arcs.sort(key=lambda a: a[0])
    return arcs


def arcs_to_fsa(arcs: List[list]):
    """k2 Fsa (labels = tokens, aux_labels = words) from `[src, dst, token, word, score]` arcs."""
    k2 = import_k2()
    import torch

    text = "\n".join(f"{a[0]} {a[1]} {a[2]} {a[3]} {a[4]}" for a in arcs)
    final_state = max(a[1] for a in arcs)
    fsa = k2.Fsa.from_str(text + f"\n{final_state}", acceptor=False)
    assert fsa.aux_labels.dtype == torch.int32
    return fsa


def lang_unit(lang_dir: PathLike) -> str:
    """`bpe` when the lang dir holds bpe.model, `char` otherwise."""
    return "bpe" if (Path(lang_dir) / "bpe.model").is_file() else "char"


def prepare_lang(
    lang_dir: PathLike,
    unit: str,
    text_files: Sequence[PathLike],
    extra_word_files: Sequence[PathLike] = (),
    bpe_size: Optional[int] = None,
) -> Dict[str, int]:
    """Build a whole lang dir from training text (+ optional word lists); returns sizes for the log."""
    k2 = import_k2()
    lang_dir = Path(lang_dir)
    lang_dir.mkdir(parents=True, exist_ok=True)

    lines: List[str] = []
    for f in text_files:
        for line in Path(f).read_text(encoding="utf-8").splitlines():
            norm, _ = normalize_text(line)
            if norm:
                lines.append(norm)
    if not lines:
        raise ValueError(f"no text in {list(map(str, text_files))} after normalization")
    words = set(words_from_text(lines))
    n_text_words = len(words)
    for f in extra_word_files:
        for line in Path(f).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            # word lists may be `word` or `word pron...` (lexicons) or `word count`; use the first field
            norm, _ = normalize_text(line.split()[0])
            words.update(norm.split())
    words.discard("")
    logging.info(f"{len(words)} words ({n_text_words} from training text)")

    if unit == "char":
        table = TokenTable.chars()
        table.to_file(lang_dir / "tokens.txt")
        lexicon = char_lexicon(sorted(words), table)
        space_token: Optional[str] = SPACE
    elif unit == "bpe":
        if not bpe_size:
            raise ValueError("--unit bpe needs --bpe-size")
        from qnet.tokens import train_bpe

        transcript = lang_dir / "transcript_words.txt"
        atomic_write_text(transcript, "".join(line + "\n" for line in lines))
        bpe_model = train_bpe(transcript, bpe_size, lang_dir)
        table = TokenTable.from_file(lang_dir / "tokens.txt")
        lexicon = bpe_lexicon(sorted(words), bpe_model)
        space_token = None
    else:
        raise ValueError(f"unknown unit {unit!r} (expected char or bpe)")

    word_table = make_word_table(words)
    word_table.to_file(lang_dir / "words.txt")
    write_lexicon(lang_dir / "lexicon.txt", lexicon)
    lexicon_disambig, max_disambig = add_disambig_symbols(lexicon)
    write_lexicon(lang_dir / "lexicon_disambig.txt", lexicon_disambig)

    token_symbols = list(table.symbols) + [f"#{i}" for i in range(max_disambig + 1)]
    SymbolTable(token_symbols).to_file(lang_dir / "tokens.txt")
    token2id = {s: i for i, s in enumerate(token_symbols)}
    word2id = {s: i for i, s in enumerate(word_table.symbols)}

    L = arcs_to_fsa(lexicon_to_fsa_arcs(lexicon, token2id, word2id, space_token))
    L_disambig = arcs_to_fsa(
        lexicon_to_fsa_arcs(lexicon_disambig, token2id, word2id, space_token, need_self_loops=True)
    )
    atomic_torch_save(L.as_dict(), lang_dir / "L.pt")
    atomic_torch_save(L_disambig.as_dict(), lang_dir / "L_disambig.pt")
    sizes = {
        "words": len(word_table),
        "tokens": len(table),
        "disambig": max_disambig + 1,
        "L_arcs": L.num_arcs,
        "L_disambig_arcs": L_disambig.num_arcs,
    }
    logging.info(f"lang dir {lang_dir}: {sizes}")
    return sizes


def load_lang(lang_dir: PathLike) -> Tuple[TokenTable, SymbolTable, SymbolTable]:
    """(model token table, tokens.txt with disambiguation symbols, words.txt) of a lang dir."""
    lang_dir = Path(lang_dir)
    for name in ("tokens.txt", "words.txt"):
        if not (lang_dir / name).is_file():
            raise FileNotFoundError(f"{lang_dir / name} is missing; run qnet.bin.prepare_lang first")
    return (
        TokenTable.from_file(lang_dir / "tokens.txt"),
        SymbolTable.from_file(lang_dir / "tokens.txt"),
        SymbolTable.from_file(lang_dir / "words.txt"),
    )
