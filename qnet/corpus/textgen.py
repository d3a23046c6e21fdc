"""Sentence generators for the synthetic corpora: a NARRATIVE domain (past-tense stories) and a NEWS domain
(financial/business news). Word lists live in `qnet/corpus/data/{narrative,news}.txt`; templates are below.

Everything is driven by a `random.Random`, so the same seed gives the same sentences on every machine.
Sentences come out UPPERCASE, words separated by single spaces, letters and apostrophes only
(the LibriSpeech / WSJ non-verbalized-punctuation convention).
"""

import random
import re
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

DATA_DIR = Path(__file__).parent / "data"
DOMAINS = ("narrative", "news")
_SLOT = re.compile(r"\{([a-z_0-9:]+)\}")
_VALID_WORD = re.compile(r"^[A-Z']+$")


def load_word_lists(path: Path) -> Dict[str, List[str]]:
    """Read a `[category]` + whitespace-separated-entries file; `_` in an entry stands for a space."""
    lists: Dict[str, List[str]] = {}
    current: Optional[str] = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            current = m.group(1)
            lists.setdefault(current, [])
            continue
        if current is None:
            raise ValueError(f"{path}:{lineno}: entries before the first [category] header")
        for entry in line.split():
            if not re.fullmatch(r"[a-z'_]+", entry):
                raise ValueError(f"{path}:{lineno}: bad entry {entry!r} (lowercase letters, ' and _ only)")
            lists[current].append(entry.replace("_", " "))
    # Keep first occurrences only, in file order (deterministic).
    return {k: list(dict.fromkeys(v)) for k, v in lists.items()}


def _article(word: str) -> str:
    """'a' or 'an' for the following word (spelling-based, with the common exceptions)."""
    w = word.lower()
    if w.startswith(("hour", "honest", "honour", "honor", "heir")):
        return "an"
    if w.startswith(("uni", "use", "usu", "eu", "one", "ewe", "uti")):
        return "a"
    return "an" if w[:1] in "aeiou" else "a"


_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                 "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """Spell 0 <= n < 1000 in words ("three hundred twelve"), WSJ style without "and"."""
    if not 0 <= n < 1000:
        raise ValueError(f"number_to_words handles 0..999, got {n}")
    if n < 20:
        return _NUMBER_WORDS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens - 2] + ("" if ones == 0 else " " + _NUMBER_WORDS[ones])
    hundreds, rest = divmod(n, 100)
    return _NUMBER_WORDS[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))


class SentenceGenerator:
    """Template grammar over word lists; `sentence(rng)` returns one UPPERCASE sentence."""

    templates: Sequence[str] = ()
    connectors: Sequence[str] = ()

    def __init__(self, word_file: Path):
        self.words = load_word_lists(word_file)
        self._fillers: Dict[str, Callable[[random.Random, dict], str]] = {}

    # -- slot filling ------------------------------------------------------------------------------
    def pick(self, rng: random.Random, *categories: str) -> str:
        """A uniformly chosen entry of the union of `categories` (chosen category weighted by size)."""
        sizes = [len(self.words[c]) for c in categories]
        i = rng.randrange(sum(sizes))
        for c, n in zip(categories, sizes):
            if i < n:
                return self.words[c][i]
            i -= n
        raise AssertionError("unreachable")

    def fill_slot(self, slot: str, rng: random.Random, state: dict) -> str:
        """Expand one `{slot}`: `a:cat` adds an article, a registered filler, or a word-list category."""
        if slot.startswith("a:"):
            word = self.fill_slot(slot[2:], rng, state)
            return f"{_article(word)} {word}"
        if slot in self._fillers:
            return self._fillers[slot](rng, state)
        cats = slot.split(":")
        missing = [c for c in cats if c not in self.words]
        if missing:
            raise KeyError(f"{type(self).__name__}: unknown slot/category {missing} in template")
        return self.pick(rng, *cats)

    def clause(self, rng: random.Random, state: Optional[dict] = None) -> str:
        """One template expanded (lowercase words)."""
        state = {} if state is None else state
        template = rng.choice(self.templates)
        return _SLOT.sub(lambda m: self.fill_slot(m.group(1), rng, state), template)

    def sentence(self, rng: random.Random, min_words: int = 6, max_words: int = 16) -> str:
        """A sentence of min_words..max_words words: clauses joined by connectors towards a random target length."""
        if min_words < 1 or max_words < min_words:
            raise ValueError(f"bad sentence length range {min_words}..{max_words}")
        for _ in range(10000):
            target = rng.randint(min_words, max_words)
            words = self.clause(rng).split()
            while len(words) < target - 2 and self.connectors:
                words += [rng.choice(self.connectors)] + self.clause(rng).split()
            if min_words <= len(words) <= max_words:
                text = " ".join(words).upper()
                bad = [w for w in text.split() if not _VALID_WORD.match(w)]
                if bad:
                    raise ValueError(f"{type(self).__name__} produced invalid words {bad} in {text!r}")
                return text
        raise RuntimeError(f"{type(self).__name__}: cannot produce a sentence of {min_words}..{max_words} words "
                           f"(its templates are longer; widen the range)")

    def vocabulary(self) -> Set[str]:
        """Every word the grammar can emit (UPPERCASE)."""
        vocab: Set[str] = set()
        for entries in self.words.values():
            for e in entries:
                vocab.update(e.upper().split())
        for t in list(self.templates) + list(self.connectors):
            vocab.update(w.upper() for w in _SLOT.sub(" ", t).split())
        vocab.update(w.upper() for w in self.extra_words())
        vocab.update(("A", "AN"))  # from {a:...} slots
        return vocab

    def extra_words(self) -> Iterable[str]:
        """Words emitted by registered fillers that are not in the word lists."""
        return ()


class NarrativeGenerator(SentenceGenerator):
    """Stories: characters, places, actions, dialogue-free past-tense narration."""

    templates = (
        "{name} {vt_past:vt_past2} the {adj} {object:object2} {prep_static} the {place}",
        "the {adj} {person} {vi_past:vi_past2} {adverb} {prep_motion} the {place}",
        "{time_phrase} {name} {vi_past:vi_past2} {prep_motion} the {adj} {place}",
        "{name} and {name2} {vi_past} {prep_motion} the {place} {adverb}",
        "{name} {vt_past} {poss} {adj} {object} and {vi_past} {adverb}",
        "when {name} {vi_past} {prep_motion} the {place} the {person} {vt_past} {a:adj} {object}",
        "the {person} {vt_past} {poss_any} {object:object2} {prep_static} the {colour} {place}",
        "{a:adj} {animal} {vi_past} {prep_motion} the {plant} {prep_static} the {place}",
        "{name} {vt_past} {a:colour} {object} from the {adj} {person}",
        "{poss_cap_name} {kin} {vt_past} {a:adj} {food} for the {feeling:abstract} of the {place}",
        "in the {time} {name} {vi_past} {prep_static} the {plant} and {vi_past} {adverb}",
        "the {weather} {vt_past2} the {material} {object} {prep_static} the {adj} {place}",
        "{name} {vt_past} {number} {object}s and {number} {food}s {prep_static} the {place}",
        "{name} felt {a:adj} {feeling} as {subj} {vi_past} {prep_motion} the {place}",
        "the {animal} {vi_past} {adverb} while the {person} {vt_past} the {object:object2}",
        "{subj_cap_name} had never {vt_past} {a:adj} {object} {prep_static} the {place} before",
        "{name} {vt_past} the {person} who {vt_past} the {adj} {animal}",
        "the {ordinal} {person} {vi_past} {prep_motion} the {adj} {place} {time_phrase}",
        "{name} {vt_past} {poss} {body} with {a:adj} {material} {object}",
        "there was {a:adj} {person} who lived {prep_static} the {place} with {number} {animal}s",
        "the {place} was {adj} and {adj} {time_phrase}",
        "{name} {vt_past:vt_past2} the {food} and {vt_past} the {object} {prep_static} the {place}",
        "{name} {vi_past} {prep_motion} the {place} carrying {a:adj} {object}",
        "the {adj} {animal} {vt_past} the {food} {prep_static} the {place} of the {person}",
        "{name} told the {person} {a:adj} {abstract} about the {adj} {place}",
        "the {colour} {object} belonged to the {person} of the {place}",
        "{name} was {vi_present_part} {prep_static} the {place} when the {weather} came",
        "{name} {vt_past} the {plant} {prep_static} the {place} {time_phrase}",
        "a {colour} {animal} {vi_past} {prep_motion} the {place} and {vi_past} {adverb}",
        "{name} {vi_past:vi_past2} {adverb} because the {person} {vt_past} {poss_any} {abstract}",
    )
    connectors = ("and", "but", "while", "before", "after", "because", "so", "until", "and then")

    def __init__(self):
        super().__init__(DATA_DIR / "narrative.txt")
        self._fillers.update({
            "name": self._name,
            "name2": lambda rng, st: self.pick(rng, "male_name", "female_name"),
            "poss": lambda rng, st: "his" if st.get("gender", "m") == "m" else "her",
            "subj": lambda rng, st: "he" if st.get("gender", "m") == "m" else "she",
            "poss_any": lambda rng, st: rng.choice(("his", "her", "their", "the old")),
            "poss_cap_name": lambda rng, st: self._name(rng, st) + "'s",
            "subj_cap_name": self._name,
            "adj": lambda rng, st: self.pick(rng, "adjective", "adjective2"),
        })

    def _name(self, rng: random.Random, state: dict) -> str:
        """A character name; remembers the gender for later pronouns in the same clause."""
        state["gender"] = rng.choice("mf")
        return self.pick(rng, "male_name" if state["gender"] == "m" else "female_name")

    def extra_words(self) -> Iterable[str]:
        """Pronouns, possessive names and plurals that fillers/templates form."""
        words = ["his", "her", "he", "she", "their", "old"]
        words += [n + "'s" for n in self.words["male_name"] + self.words["female_name"]]
        words += [o + "s" for o in self.words["object"] + self.words["object2"] + self.words["food"]
                  + self.words["animal"]]
        return [w for e in words for w in e.split()]


class NewsGenerator(SentenceGenerator):
    """Financial and business news, numbers spelled out as WSJ non-verbalized-punctuation prompts."""

    templates = (
        "{company} said its {fin_adj} {earnings} {moved} {pct} to {money}",
        "shares of {company} {verb_past_move} {cents} to {share_price} in {exchange} trading",
        "{person_name} {title} of {company} said the company expects {fin_noun} to {verb_base} {time_ref}",
        "the {agency} reported that {fin_noun} {verb_past_move} {adverb} in {month}",
        "{company} agreed to acquire {company2} for about {money}",
        "analysts expect the {industry} industry to {verb_base} its {fin_noun} {time_ref}",
        "{company} {verb_past} {a:fin_adj} {fin_noun} of {money} for the {ordinal} quarter",
        "the dollar {verb_past_move} against the {currency} in {city} {weekday}",
        "{commodity} prices {verb_past_move} {adverb} on concerns about {fin_noun} in {country}",
        "{person_name} was named {title} of the {nationality} {industry} company",
        "the {fin_adj} {fin_noun} of {company} {verb_past_move} {pct} from a year earlier",
        "{company} based in {city} announced plans to {verb_base} its {product} {fin_noun}",
        "{nationality} {product} makers {verb_past} {fin_adj} {fin_noun} {time_ref}",
        "the {index} {verb_past_move} {points} points to {index_level} in {adj_volume} trading",
        "{company} said it will {verb_base} about {count} {fin_unit} at its {state} {fin_noun_place}",
        "{title} {person_name} said {fin_noun} in the {industry} business remain {fin_adj}",
        "the company {verb_past} {money} in {fin_adj} {fin_noun} {time_ref}",
        "{company} is {verb_ing_t} a {fin_adj} {fin_noun} with {company2} {people_said}",
        "{company} said {fin_noun} in its {unit_name} unit {verb_past_move} because of {reason}",
        "{fin_adj} {earnings} at {company} {verb_past_move} {pct} as a result of {reason}",
        "{person_name} said the {unit_name} business {verb_past} {money} {time_ref}",
        "{company} plans to sell its {unit_name} operations to {company2} for {money}",
        "{country} {verb_past} {fin_adj} {fin_noun} on {product} from {country2}",
        "investors {verb_past} {fin_noun} of {industry} companies after the {agency} {verb_past} {fin_noun}",
        "{company} {verb_past} a {fin_adj} dividend of {cents} a share",
        "in {year} the company {verb_past} {money} in {fin_noun} from its {product} business",
        "the {fin_adj} {fin_noun} rate {verb_past_move} to {pct_level} in {month}",
        "{person_name} an analyst at {company} said {fin_noun} {moved} {adverb}",
        "{company} and {company2} {verb_past} a joint venture to {verb_base} {product} in {country}",
        "the {agency} is {verb_ing_t} the {fin_adj} {fin_noun} of {company}",
        "{fin_noun} of {product} {verb_past_move} {pct} in the {ordinal} quarter of {year}",
        "{company} {verb_past} {count} {fin_unit} of its {fin_adj} stock {people_said}",
        "the {state} {industry} company {verb_past} {fin_noun} of {money} {time_ref}",
        "{commodity} for {month} delivery {verb_past_move} {cents} to {share_price} a {commodity_unit}",
    )
    connectors = ("and", "but", "while", "after", "as", "because", "although")

    def __init__(self):
        super().__init__(DATA_DIR / "news.txt")
        w = self.words
        self._fillers.update({
            "company": self._company,
            "company2": self._company,
            "person_name": lambda rng, st: f"{self.pick(rng, 'first_name')} {self.pick(rng, 'last_name')}",
            "earnings": lambda rng, st: rng.choice(("earnings", "revenue", "profit", "net income", "sales",
                                                     "operating profit", "loss")),
            "moved": lambda rng, st: rng.choice(w["verb_past"][:16]),
            "verb_past_move": lambda rng, st: rng.choice(w["verb_past"][:16]),
            "pct": lambda rng, st: self._percent(rng),
            "pct_level": lambda rng, st: self._percent(rng),
            "money": self._money,
            "cents": lambda rng, st: f"{number_to_words(rng.randint(1, 99))} cents",
            "share_price": lambda rng, st: f"{number_to_words(rng.randint(2, 150))} dollars",
            "exchange": lambda rng, st: rng.choice(("new york stock exchange composite", "over the counter",
                                                     "american stock exchange", "big board", "heavy", "light")),
            "time_ref": self._time_ref,
            "currency": lambda rng, st: rng.choice(("yen", "mark", "pound", "franc", "canadian dollar", "lira")),
            "index": lambda rng, st: rng.choice(("dow jones industrial average", "standard and poor's index",
                                                  "nasdaq composite index", "transportation average",
                                                  "utility average", "composite index")),
            "points": lambda rng, st: number_to_words(rng.randint(1, 99)),
            "index_level": lambda rng, st: (f"{number_to_words(rng.randint(1, 3))} thousand "
                                            f"{number_to_words(rng.randint(1, 999))}"),
            "adj_volume": lambda rng, st: rng.choice(("heavy", "light", "active", "moderate", "thin", "brisk")),
            "count": lambda rng, st: self._count(rng),
            "fin_noun_place": lambda rng, st: rng.choice(("plant", "factory", "mill", "refinery", "offices",
                                                           "headquarters", "stores", "facility")),
            "people_said": lambda rng, st: rng.choice(("people familiar with the matter said",
                                                        "officials said", "analysts said",
                                                        "according to a company spokesman",
                                                        "according to a filing", "traders said")),
            "country2": lambda rng, st: self.pick(rng, "country"),
            "year": lambda rng, st: f"nineteen {number_to_words(rng.randint(60, 89))}",
            "commodity_unit": lambda rng, st: rng.choice(("barrel", "ounce", "bushel", "pound", "ton")),
            "verb_past": lambda rng, st: rng.choice(w["verb_past"]),
            "verb_ing_t": lambda rng, st: rng.choice(w["verb_ing"][8:]),  # the transitive ones
        })

    def _company(self, rng: random.Random, state: dict) -> str:
        """A made-up company name: one or two name words plus a suffix."""
        parts = [self.pick(rng, "company_word")]
        if rng.random() < 0.4:
            parts.append(self.pick(rng, "company_word", "last_name"))
        if rng.random() < 0.2:
            parts = [self.pick(rng, "last_name")] + parts[1:]
        parts.append(self.pick(rng, "company_suffix"))
        return " ".join(parts)

    def _percent(self, rng: random.Random) -> str:
        """'four point five percent' or 'twelve percent'."""
        whole = number_to_words(rng.randint(0, 40) if rng.random() < 0.8 else rng.randint(41, 99))
        if rng.random() < 0.5:
            return f"{whole} point {number_to_words(rng.randint(1, 9))} percent"
        return f"{whole} percent"

    def _money(self, rng: random.Random, state: dict) -> str:
        """'three hundred twelve million dollars' and the like."""
        amount = number_to_words(rng.randint(1, 999))
        scale = rng.choice(("thousand", "million", "million", "billion"))
        unit = rng.choice(("dollars", "dollars", "dollars", "yen", "marks", "pounds", "francs"))
        if rng.random() < 0.3:
            return f"{amount} point {number_to_words(rng.randint(1, 9))} {scale} {unit}"
        return f"{amount} {scale} {unit}"

    def _count(self, rng: random.Random) -> str:
        """A count of things (employees, shares...)."""
        n = rng.randint(2, 999)
        return number_to_words(n) + rng.choice(("", "", " thousand", " million"))

    def _time_ref(self, rng: random.Random, state: dict) -> str:
        """A time expression: 'next year', 'in the third quarter', 'by march'."""
        return rng.choice((
            "next year", "this year", "last year", "next month", "this quarter", "later this year",
            f"in the {self.pick(rng, 'ordinal')} quarter", f"by {self.pick(rng, 'month')}",
            f"in {self.pick(rng, 'month')}", f"in fiscal nineteen {number_to_words(rng.randint(86, 92))}",
            "over the next five years", "in the coming months", f"on {self.pick(rng, 'weekday')}",
        ))

    def extra_words(self) -> Iterable[str]:
        """Number words, fixed phrases and units the fillers use."""
        words = list(_NUMBER_WORDS) + list(_TENS)
        words += ("hundred thousand million billion point percent cents dollars yen marks pounds francs "
                  "lira canadian dollar mark pound franc nineteen next this last later year month quarter "
                  "fiscal over the five years in coming months by on new york stock exchange composite "
                  "counter american big board heavy light dow jones industrial average standard and poor's "
                  "index nasdaq transportation utility active moderate thin brisk plant factory mill "
                  "refinery offices headquarters stores facility people familiar with matter said officials "
                  "analysts according to a company spokesman filing traders barrel ounce bushel ton earnings "
                  "revenue profit net income sales operating loss").split()
        return words


def make_generator(domain: str) -> SentenceGenerator:
    """The generator for `domain` ('narrative' or 'news')."""
    if domain == "narrative":
        return NarrativeGenerator()
    if domain == "news":
        return NewsGenerator()
    raise ValueError(f"unknown text domain {domain!r}; expected one of {DOMAINS}")


def generate_splits(
    domain: str,
    seed: int,
    counts: Dict[str, int],
    num_lm: int,
    min_words: int = 6,
    max_words: int = 16,
    held_out: Sequence[str] = ("test", "dev"),
) -> Tuple[Dict[str, List[str]], List[str]]:
    """Distinct sentences per split plus LM sentences; the LM text never contains a held-out sentence.

    Each split has its own random stream (seeded from `seed`, the domain and the split name), so changing
    one split's size does not change another's sentences except through the exclusion of held-out ones.
    Held-out splits are drawn first, then the others; every split's sentences are distinct from every
    other split's. LM sentences are drawn from their own stream and skip the held-out sentences.
    """
    gen = make_generator(domain)
    order = [s for s in held_out if s in counts] + [s for s in counts if s not in held_out]
    used: Set[str] = set()
    splits: Dict[str, List[str]] = {}
    for split in order:
        rng = random.Random(f"qnet-synth/{domain}/{seed}/{split}")
        out: List[str] = []
        tries = 0
        while len(out) < counts[split]:
            s = gen.sentence(rng, min_words, max_words)
            tries += 1
            if s in used:
                if tries > 50 * (counts[split] + 100):
                    raise RuntimeError(f"{domain}/{split}: too many duplicate sentences; widen the length range")
                continue
            used.add(s)
            out.append(s)
        splits[split] = out
    forbidden = {s for split in held_out for s in splits.get(split, [])}
    rng = random.Random(f"qnet-synth/{domain}/{seed}/lm")
    lm: List[str] = []
    tries = 0
    while len(lm) < num_lm:
        s = gen.sentence(rng, min_words, max_words + 8)
        tries += 1
        if s not in forbidden:
            lm.append(s)
        elif tries > 100 * (num_lm + 100):
            raise RuntimeError(f"{domain}/lm: the grammar keeps producing held-out sentences")
    return {s: splits[s] for s in counts}, lm
