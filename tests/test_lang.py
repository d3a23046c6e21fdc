"""Lang dirs: Kaldi disambiguation symbols, char and BPE lexicons, and what L accepts."""

import pytest
import torch

from qnet.lang import SymbolTable, add_disambig_symbols, make_word_table, prepare_lang, read_lexicon


def test_add_disambig_symbols_like_kaldi():
    lexicon = [("a", ["x"]), ("ab", ["x", "y"]), ("b", ["z"]), ("b2", ["z"]), ("c", ["w"])]
    out, max_disambig = add_disambig_symbols(lexicon)
    assert dict((w, p) for w, p in out) == {
        "a": ["x", "#1"],  # prefix of "x y"
        "ab": ["x", "y"],
        "b": ["z", "#1"],  # homophones get #1, #2
        "b2": ["z", "#2"],
        "c": ["w"],
    }
    assert max_disambig == 2


def test_word_table_layout():
    table = make_word_table(["b", "a"])
    assert table.symbols == ["<eps>", "<UNK>", "a", "b", "#0", "<s>", "</s>"]


def _accepts(L, tokens, token_ids):
    """Word sequences L maps the token sequence to (k2 intersection with a linear acceptor)."""
    import k2

    fsa = k2.linear_fsa([token_ids[t] for t in tokens])
    lat = k2.intersect(k2.arc_sort(L), fsa, treat_epsilons_specially=True)
    lat = k2.connect(lat)
    if lat.num_arcs == 0:
        return None
    best = k2.shortest_path(k2.create_fsa_vec([lat]), use_double_scores=True)
    return best.aux_labels[best.aux_labels > 0].tolist()


def test_char_lang_dir(tmp_path):
    text = tmp_path / "text"
    text.write_text("The cat, the CAT!\nat a cat\n")
    extra = tmp_path / "vocab"
    extra.write_text("Hat\ncats 12\n")
    lang = tmp_path / "lang"
    sizes = prepare_lang(lang, "char", [text], [extra])
    for name in ("tokens.txt", "words.txt", "lexicon.txt", "lexicon_disambig.txt", "L.pt", "L_disambig.pt"):
        assert (lang / name).is_file(), name
    words = SymbolTable.from_file(lang / "words.txt")
    assert words.symbols == ["<eps>", "<UNK>", "a", "at", "cat", "cats", "hat", "the", "#0", "<s>", "</s>"]
    tokens = SymbolTable.from_file(lang / "tokens.txt")
    assert tokens.symbols[:3] == ["<blk>", "<space>", "a"] and tokens.symbols[29] == "#0"
    lex = dict(read_lexicon(lang / "lexicon_disambig.txt"))
    assert lex["cat"] == ["c", "a", "t", "#1"]  # prefix of "cats"
    assert lex["a"] == ["a", "#1"] and lex["at"] == ["a", "t"]
    assert sizes["disambig"] == 2

    import k2

    L = k2.Fsa.from_dict(torch.load(lang / "L.pt"))
    ids = {s: i for i, s in enumerate(tokens.symbols)}
    w = {s: i for i, s in enumerate(words.symbols)}
    sp = "<space>"
    # words need a space between them; a leading/trailing space is optional
    assert _accepts(L, ["c", "a", "t", sp, "a", "t"], ids) == [w["cat"], w["at"]]
    assert _accepts(L, [sp, "c", "a", "t", sp], ids) == [w["cat"]]
    assert _accepts(L, ["c", "a", "t", "s"], ids) == [w["cats"]]
    assert _accepts(L, ["a", "a", "t"], ids) is None  # "a" "at" without the space is not accepted
    assert _accepts(L, ["c", "a", "x"], ids) is None


def test_char_lang_rejects_unspellable_word(tmp_path):
    text = tmp_path / "text"
    text.write_text("hello\n")
    words = tmp_path / "w"
    words.write_text("ok\n")
    prepare_lang(tmp_path / "lang", "char", [text], [words])  # fine
    with pytest.raises(ValueError, match="no text"):
        empty = tmp_path / "empty"
        empty.write_text("!!!\n")
        prepare_lang(tmp_path / "lang2", "char", [empty])


def test_bpe_lang_dir(tmp_path):
    text = tmp_path / "text"
    text.write_text("\n".join(["the cat sat on the mat", "a hat and a cat", "that cat is fat",
                                     "the quick brown fox jumps over the lazy dog", "we love kings"] * 20) + "\n")
    lang = tmp_path / "lang_bpe"
    prepare_lang(lang, "bpe", [text], bpe_size=30)
    assert (lang / "bpe.model").is_file()
    from qnet.tokens import load_tokenizer

    tok = load_tokenizer(lang)
    assert tok.table.symbols[:3] == ["<blk>", "<sos/eos>", "<unk>"]
    lex = dict(read_lexicon(lang / "lexicon.txt"))
    assert lex["<UNK>"] == ["<unk>"]
    assert "".join(lex["cat"]).replace("\u2581", "") == "cat"
    tokens = SymbolTable.from_file(lang / "tokens.txt")
    assert tokens.symbols[len(tok.table)] == "#0"


def test_bpe_decode_never_writes_special_tokens(tmp_path):
    from qnet.tokens import BpeTokenizer, train_bpe

    text = tmp_path / "text"
    text.write_text("the cat sat on the mat\na hat and a cat\nthe quick brown fox jumps over the lazy dog\n" * 20)
    tok = BpeTokenizer(train_bpe(text, 30, tmp_path / "lang"))
    blk, sos_eos, unk = (tok.table.id(s) for s in ("<blk>", "<sos/eos>", "<unk>"))
    ids = tok.encode("the cat")
    assert tok.decode(ids) == "the cat"
    # what an untrained or unsure model emits: the special pieces anywhere in the sequence
    assert tok.decode([sos_eos, blk] + ids + [unk, sos_eos]) == "the cat"
    assert tok.decode([unk]) == "" and tok.decode([sos_eos, unk, blk]) == ""
    assert tok.decode(tok.encode("the") + [unk] + tok.encode("cat")) == "the cat"


def test_prepare_lang_cli(tmp_path):
    from qnet.bin.prepare_lang import main

    text = tmp_path / "text"
    text.write_text("one two\n")
    main(["--unit", "char", "--text", str(text), "--lang-dir", str(tmp_path / "lang")])
    assert (tmp_path / "lang" / "L_disambig.pt").is_file()


def test_bpe_lang_spells_unseen_letters_with_unk(tmp_path):
    """An LM-vocabulary word with a letter the training text lacks (here the apostrophe of 's) still
    gets a lexicon entry, spelled with <unk>, instead of failing on a piece the model does not have."""
    text = tmp_path / "text"
    text.write_text("the cat sat on the mat\na hat and a cat\nthe quick brown fox jumps over the lazy dog\n" * 20)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("cat\n's\nfox's\n")
    lang = tmp_path / "lang_bpe"
    prepare_lang(lang, "bpe", [text], extra_word_files=[vocab], bpe_size=30)
    lex = dict(read_lexicon(lang / "lexicon.txt"))
    assert "<unk>" in lex["'s"] and "<unk>" in lex["fox's"]
    tokens = SymbolTable.from_file(lang / "tokens.txt")
    assert all(p in tokens for pron in lex.values() for p in pron)
