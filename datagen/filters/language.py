"""Language of a turn and of a dialogue: Unicode script first, a detector only where script cannot
decide.

langdetect alone is wrong on this data (it calls much Simplified and most Traditional Chinese
Korean, is slow, and is random unless seeded), so a turn is decided by its script counts after code
blocks, URLs, numbers and formulas are stripped:

- Hangul dominant -> `ko`; kana present and outweighing Chinese function characters -> `ja`;
  Han -> `zh` (Simplified vs Traditional by character sets from OpenCC's tables, never by a model);
- Thai, Greek, Hebrew -> by script; Cyrillic, Arabic, Devanagari -> seeded langdetect restricted to
  that script's languages;
- Latin -> stop-word votes over a few candidate languages, then seeded langdetect when the votes do
  not decide; a turn that neither decides gets no verdict.
- Very short turns (under `MIN_CJK_CHARS` CJK characters and under `MIN_LATIN_WORDS` words) and
  code-only turns get no verdict (None).

A dialogue is decided by the verdicts of its turns weighted by their length (`detect_dialogue`),
which also flags drift: the user writes in one language, the assistant answers in another.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datagen.record import Conversation

#: Fewer CJK characters than this (and fewer Latin words than MIN_LATIN_WORDS): no verdict.
MIN_CJK_CHARS = 3
#: Fewer Latin-script words than this (and fewer CJK chars than MIN_CJK_CHARS): no verdict.
MIN_LATIN_WORDS = 3
#: One CJK character weighs as much as this many Latin letters (a Chinese word averages 1.5
#: characters, an English one about 4.7 letters).
CJK_CHAR_WEIGHT = 3.0
#: Seed for langdetect, whose answers are random between calls otherwise.
LANGDETECT_SEED = 0
_LANGDETECT_MAX_CHARS = 300

# ---------------------------------------------------------------------------------------------------
# Stripping what carries no language

_CODE_FENCE_RE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)", re.S)
_INLINE_CODE_RE = re.compile(r"`[^`\n]*`")
_URL_RE = re.compile(r"(?:https?|ftp)://\S+|www\.\S+", re.I)
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_MATH_RE = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$|\\\[.*?\\\]|\\\(.*?\\\)", re.S)
_MOSS_TAG_RE = re.compile(r"<\|[A-Za-z ]+\|>:?|<e o[hctrm]>|<eo[hctrm]>|<sup>.*?</sup>")
_NUMBER_RE = re.compile(r"[+-]?\d[\d.,:/%eE+-]*")
_CODE_KEYWORD_RE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import |return\b|if\s*\(|for\s*\(|while\s*\(|#include|"
    r"public |private |static |const |let |var |function\b|print\(|console\.|SELECT |INSERT |"
    r"UPDATE |DELETE |CREATE |package |using |namespace |\}|\{|//|/\*|\*/|<\?|<[a-zA-Z/][^>]*>$|"
    r"[A-Za-z_][\w.]*\s*(?:=|\+=|-=|==)\s*\S|[A-Za-z_][\w.]*\(.*\)\s*;?$)"
)
_CODE_END_RE = re.compile(r"(?:[;{}]|\):|\)|\]|,)\s*$")
#: Shell command lines: tools whose name is no English word, or common commands with flags/paths.
_SHELL_RE = re.compile(
    r"^\s*(?:\$\s*)?(?:(?:git|npm|npx|yarn|pnpm|pip3?|conda|docker|kubectl|sudo|apt|apt-get|yum|brew|wget|curl|"
    r"ssh|scp|chmod|chown|mkdir|rm|ls|tar|cargo|mvn|gradle|rustc|gcc|g\+\+|javac)\s+\S|"
    r"(?:python3?|node|make|go|java|cd|cat|echo|export|cp|mv|find|grep)\s+.*(?:\s--?\w|&&|\||/|=))"
)


def _is_code_line(line: str) -> bool:
    s = line.strip()
    if not s:
        return False
    if _has_cjk(s):
        return False
    if _CODE_KEYWORD_RE.match(s) or _SHELL_RE.match(s):
        return True
    symbols = sum(1 for c in s if not c.isalnum() and not c.isspace())
    if len(s) >= 4 and symbols / len(s) >= 0.25:
        return True
    return bool(_CODE_END_RE.search(s)) and symbols / len(s) >= 0.12


def strip_non_language(text: str) -> str:
    """Remove what says nothing about the natural language of a text: fenced and inline code, code
    lines, URLs, e-mail addresses, formulas, numbers and MOSS tags."""
    text = unicodedata.normalize("NFKC", text)
    text = _CODE_FENCE_RE.sub(" ", text)
    text = _INLINE_CODE_RE.sub(" ", text)
    text = _MOSS_TAG_RE.sub(" ", text)
    text = _URL_RE.sub(" ", text)
    text = _EMAIL_RE.sub(" ", text)
    text = _MATH_RE.sub(" ", text)
    lines = [ln for ln in text.splitlines() if not _is_code_line(ln)]
    return _NUMBER_RE.sub(" ", "\n".join(lines))


# ---------------------------------------------------------------------------------------------------
# Script counts


def _has_cjk(s: str) -> bool:
    return any(_script_of(c) in ("han", "kana", "hangul") for c in s)


@functools.lru_cache(maxsize=65536)
def _script_of(ch: str) -> str:
    cp = ord(ch)
    if 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3134F:
        return "han"
    if 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF:
        return "kana" if cp not in (0x30FB, 0x30FC) else "kana_mark"  # ・ and ー appear in zh text too
    if 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F:
        return "hangul"
    if not ch.isalpha():
        return "other"
    if cp < 0x250 or 0x1E00 <= cp <= 0x1EFF:
        return "latin"
    if 0x400 <= cp <= 0x52F:
        return "cyrillic"
    if 0x370 <= cp <= 0x3FF or 0x1F00 <= cp <= 0x1FFF:
        return "greek"
    if 0x590 <= cp <= 0x5FF:
        return "hebrew"
    if 0x600 <= cp <= 0x6FF or 0x750 <= cp <= 0x77F:
        return "arabic"
    if 0x900 <= cp <= 0x97F:
        return "devanagari"
    if 0xE00 <= cp <= 0xE7F:
        return "thai"
    try:
        return unicodedata.name(ch).split()[0].lower()
    except ValueError:
        return "other"


@dataclass(slots=True)
class ScriptCounts:
    """Letters per script in a text (after `strip_non_language`) and its Latin-script words."""

    counts: Counter = field(default_factory=Counter)
    latin_words: list[str] = field(default_factory=list)

    @property
    def cjk(self) -> int:
        return self.counts["han"] + self.counts["kana"] + self.counts["hangul"]

    @property
    def weight(self) -> float:
        """Size of the text in Latin-letter equivalents (what dialogue votes weigh by)."""
        other = sum(n for s, n in self.counts.items() if s not in ("han", "kana", "hangul", "kana_mark"))
        return self.cjk * CJK_CHAR_WEIGHT + other


_WORD_RE = re.compile(r"[^\W\d_]+")


def script_counts(text: str, *, strip: bool = True) -> ScriptCounts:
    """Count letters per script (han, kana, hangul, latin, cyrillic, ...) in text."""
    if strip:
        text = strip_non_language(text)
    counts = Counter(_script_of(c) for c in text if not c.isspace())
    counts.pop("other", None)
    words = [w for w in _WORD_RE.findall(text.lower()) if all(_script_of(c) == "latin" for c in w)]
    return ScriptCounts(counts, words)


# ---------------------------------------------------------------------------------------------------
# Chinese variants


@functools.cache
def _variant_sets() -> tuple[frozenset[str], frozenset[str]]:
    """(Traditional-only, Simplified-only) characters, from OpenCC's character tables."""
    import opencc

    folder = Path(opencc.__file__).parent / "dictionary"

    def load(name: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in (folder / name).read_text(encoding="utf-8").splitlines():
            if "\t" in line:
                k, v = line.split("\t", 1)
                out[k] = v.split()
        return out

    ts, st = load("TSCharacters.txt"), load("STCharacters.txt")
    trad = {k for k, v in ts.items() if k not in v} - set(st)
    simp = {k for k, v in st.items() if k not in v} - set(ts)
    return frozenset(trad), frozenset(simp)


def variant_counts(text: str) -> tuple[int, int]:
    """(Traditional-only, Simplified-only) character counts of text."""
    trad, simp = _variant_sets()
    t = s = 0
    for c in text:
        if c in trad:
            t += 1
        elif c in simp:
            s += 1
    return t, s


def detect_script_variant(text: str) -> str | None:
    """`zh-Hant` or `zh-Hans` by character set (Traditional-only vs Simplified-only characters), or
    None when text has no character that tells them apart."""
    t, s = variant_counts(text)
    if t == s:
        return None
    return "zh-Hant" if t > s else "zh-Hans"


def to_simplified(text: str) -> str:
    """Convert Traditional characters to Simplified (OpenCC t2s, character level)."""
    return _t2s_converter().convert(text)


@functools.cache
def _t2s_converter():
    import opencc

    return opencc.OpenCC("t2s")


# ---------------------------------------------------------------------------------------------------
# Latin-script languages

#: Function words that tell apart the Latin-script languages datagen most often meets.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "the a an and or but of to in on at for with from by is are was were be been being do does did "
        "have has had i you he she it we they my your his her its our their this that these those what "
        "which who whom whose when where why how not no can could will would should may might must shall "
        "me him us them if then than so as about into over under up down out there here all any some "
        "please write give explain tell make help me it's don't i'm can't".split()
    ),
    "fr": frozenset(
        "le la les un une des et ou mais de du dans sur pour avec par est sont était être avoir je tu il "
        "elle nous vous ils elles ce cette ces que qui quoi où comment pourquoi ne pas plus au aux très".split()
    ),
    "de": frozenset(
        "der die das den dem des ein eine einen und oder aber von zu im mit für auf ist sind war sein "
        "haben ich du er sie es wir ihr nicht kein keine wie was warum wo wer auch noch sehr bitte".split()
    ),
    "es": frozenset(
        "el la los las un una unos unas y o pero de del en con por para es son era ser estar yo tú él "
        "ella nosotros que qué cómo dónde por qué no muy más también esto este esta".split()
    ),
    "it": frozenset(
        "il lo la gli le un una e o ma di da in con per su è sono era essere avere io tu lui lei noi "
        "che chi come dove perché non molto più anche questo questa".split()
    ),
    "pt": frozenset(
        "o a os as um uma e ou mas de do da dos das em no na com por para é são era ser estar eu tu ele "
        "ela nós que como onde porque não muito mais também isso este esta você".split()
    ),
    "nl": frozenset(
        "de het een en of maar van te in op met voor door is zijn was ik jij hij zij wij niet geen hoe "
        "wat waarom waar ook nog heel dit dat".split()
    ),
}

#: Languages a non-Latin, non-CJK script can mean: the first is the answer when the detector is unsure.
_SCRIPT_LANGS: dict[str, tuple[str, ...]] = {
    "cyrillic": ("ru", "uk", "bg", "mk", "sr"),
    "arabic": ("ar", "fa", "ur"),
    "devanagari": ("hi", "mr", "ne"),
    "greek": ("el",),
    "hebrew": ("he",),
    "thai": ("th",),
}

#: Chinese function characters that Japanese text almost never uses.
_ZH_MARKERS = frozenset("的了吗呢吧么们这个是我你她它怎没还给让说对很把哪")


def _latin_vote(words: list[str]) -> str | None:
    """The Latin-script language whose function words the text uses clearly most, else None."""
    scores = {lang: sum(1 for w in words if w in sw) for lang, sw in _STOPWORDS.items()}
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    (best, top), (_, second) = ranked[0], ranked[1]
    if top >= 2 and top >= 2 * second and top / max(1, len(words)) >= 0.1:
        return best
    return None


@functools.cache
def _langdetect_factory():
    from langdetect import DetectorFactory, detector_factory

    DetectorFactory.seed = LANGDETECT_SEED
    detector_factory.init_factory()
    return detector_factory._factory


def _langdetect(text: str, candidates: tuple[str, ...] | None = None, min_prob: float = 0.8) -> str | None:
    """Seeded langdetect; with candidates, only those languages can win (the first is the fallback
    when none reaches min_prob)."""
    from langdetect.lang_detect_exception import LangDetectException

    factory = _langdetect_factory()
    try:
        det = factory.create()
        # a few hundred characters decide as well as the whole text at a fraction of the cost
        det.max_text_length = _LANGDETECT_MAX_CHARS
        det.n_trial = 3  # 7 by default; each trial costs ~1 ms
        det.append(text)
        probs = det.get_probabilities()
    except LangDetectException:
        return candidates[0] if candidates else None
    for p in probs:
        lang = p.lang.split("-")[0]
        if candidates is None or lang in candidates:
            # short Cyrillic/Arabic text often looks like a smaller neighbour: it must be sure
            need = min_prob if candidates is None or lang == candidates[0] else max(min_prob, 0.99)
            if p.prob >= need:
                return lang
            break
    return candidates[0] if candidates else None


# ---------------------------------------------------------------------------------------------------
# Verdicts


@dataclass(slots=True)
class LanguageVerdict:
    """A turn's language (None: no verdict), its Chinese variant when it is Chinese, how it was
    decided (`script`, `stopwords`, `langdetect`, `too_short`, `no_text`) and its weight."""

    language: str | None
    variant: str | None = None
    method: str = "script"
    weight: float = 0.0


def detect_turn(text: str) -> LanguageVerdict:
    """Decide the language of one text (see the module docstring for the rules)."""
    stripped = strip_non_language(text)
    sc = script_counts(stripped, strip=False)
    c = sc.counts
    weight = sc.weight
    if not c:
        return LanguageVerdict(None, method="no_text")
    han, kana, hangul = c["han"], c["kana"], c["hangul"]
    cjk = han + kana + hangul
    n_words = len(sc.latin_words)
    latin_letters = c["latin"]
    others = {s: n for s, n in c.items() if s in _SCRIPT_LANGS}
    other_total = sum(others.values())

    if cjk < MIN_CJK_CHARS and n_words < MIN_LATIN_WORDS and other_total < 6:
        return LanguageVerdict(None, method="too_short", weight=weight)

    cjk_w = cjk * CJK_CHAR_WEIGHT
    if cjk_w >= latin_letters and cjk_w >= other_total and cjk >= MIN_CJK_CHARS:
        if hangul >= han + kana:
            return LanguageVerdict("ko", weight=weight)
        if kana:
            zh_marks = sum(1 for ch in stripped if ch in _ZH_MARKERS)
            if kana > 2 * zh_marks:
                return LanguageVerdict("ja", weight=weight)
        return LanguageVerdict("zh", detect_script_variant(stripped), weight=weight)

    if other_total > latin_letters:
        script = max(others, key=others.get)
        cands = _SCRIPT_LANGS[script]
        if len(cands) == 1 or others[script] < 20:
            # too little text for a detector to tell neighbours apart: the script's main language
            return LanguageVerdict(cands[0], weight=weight)
        return LanguageVerdict(_langdetect(stripped, cands), method="langdetect", weight=weight)

    if n_words < MIN_LATIN_WORDS:
        return LanguageVerdict(None, method="too_short", weight=weight)
    voted = _latin_vote(sc.latin_words)
    if voted:
        return LanguageVerdict(voted, method="stopwords", weight=weight)
    latin_only = " ".join(sc.latin_words)
    lang = _langdetect(latin_only, tuple(_STOPWORDS), min_prob=0.9) if n_words >= 5 else None
    if lang is None or lang not in _STOPWORDS:
        return LanguageVerdict(None, method="undecided", weight=weight)
    return LanguageVerdict(lang, method="langdetect", weight=weight)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of text (`zh`, `en`, `ja`, `ko`, ...), or None when it gets no verdict (too
    short, code only, undecided). Use `detect_script_variant` for zh-Hans vs zh-Hant."""
    return detect_turn(text).language


def detect_language_tag(text: str) -> str | None:
    """Like `detect_language`, but Chinese comes back as `zh-Hans` / `zh-Hant` when the characters
    tell (plain `zh` when they do not)."""
    v = detect_turn(text)
    if v.language == "zh" and v.variant:
        return v.variant
    return v.language


# ---------------------------------------------------------------------------------------------------
# Dialogues

#: Categories where the assistant is expected to answer in another language than the user.
DRIFT_OK_CATEGORIES = frozenset({"switching", "language_switching", "continue_switching", "translation"})
_TRANSLATE_RE = re.compile(
    r"翻译|翻譯|译成|譯成|用英[文语語]|用中文|英文[写寫回答]|中文[写寫回答]|translat|in english|in chinese|"
    r"into english|into chinese|用日[文语語]|in japanese|英訳|和訳|翻訳",
    re.I,
)


@dataclass(slots=True)
class DialogueLanguage:
    """A dialogue's language (None: no turn got a verdict), Chinese variant, per-message verdicts
    (`(role, verdict)`, role `human` or `assistant`, turn order) and the turns (1-based) where the
    assistant answered in another language than the user wrote."""

    language: str | None
    variant: str | None
    verdicts: list[tuple[str, LanguageVerdict]]
    drift_turns: list[int]

    @property
    def drift(self) -> bool:
        return bool(self.drift_turns)


def detect_dialogue(conv: Conversation, *, drift_ok_categories: frozenset[str] = DRIFT_OK_CATEGORIES) -> DialogueLanguage:
    """Decide a dialogue's language by its turns' verdicts weighted by their length; flag drift
    (the user writes one language and the assistant answers in another) except in language-switching
    categories and turns that ask for a translation."""
    votes: Counter = Counter()
    variants: Counter = Counter()
    verdicts: list[tuple[str, LanguageVerdict]] = []
    drift: list[int] = []
    allow_drift = (conv.category or "") in drift_ok_categories
    for i, turn in enumerate(conv.turns, start=1):
        vh = detect_turn(turn.human)
        va = detect_turn(turn.assistant)
        verdicts.append(("human", vh))
        verdicts.append(("assistant", va))
        for v in (vh, va):
            if v.language:
                votes[v.language] += v.weight
                if v.variant:
                    variants[v.variant] += v.weight
        if (
            not allow_drift
            and vh.language
            and va.language
            and vh.language != va.language
            and not _TRANSLATE_RE.search(turn.human)
        ):
            drift.append(i)
    lang = votes.most_common(1)[0][0] if votes else None
    variant = variants.most_common(1)[0][0] if lang == "zh" and variants else None
    return DialogueLanguage(lang, variant, verdicts, drift)
