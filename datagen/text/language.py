"""Language of a turn and of a dialogue: Unicode script first, a detector only where script cannot
decide.

langdetect alone is wrong on this data (it calls much Simplified and most Traditional Chinese
Korean, is slow, and is random unless seeded), so a turn is decided by its script counts after code
blocks, tracebacks and log lines, URLs, numbers and formulas are stripped:

- CJK outweighing Latin letters (one CJK character = `CJK_CHAR_WEIGHT` letters): Hangul -> `ko` and
  kana -> `ja`, unless the Han characters read as Chinese (function characters such as 是 么 的,
  Simplified-only forms that Japanese shinjitai lacks such as 语 围 广) and outweigh them; else `zh`
  (Simplified vs Traditional by OpenCC's character sets, then its phrase tables, never by a model).
  Han names without any Chinese function character inside Latin prose (`My favourite dishes are
  宫保鸡丁 and 红烧肉`) leave the decision to the Latin words.
- More Latin letters than CJK mass, but Chinese function characters (or kana/Hangul) frame the
  sentence and the Latin words are names rather than prose (few function words: `docker compose up
  的时候报错 port is already allocated 是什么意思?`) -> the CJK language.
- Thai, Greek, Hebrew -> by script; Cyrillic, Arabic, Devanagari -> seeded langdetect restricted to
  that script's languages;
- Latin -> stop-word votes (en fr de es it pt nl decide; Polish, Czech, Swedish, Danish, Finnish,
  Turkish, Indonesian and Vietnamese function words compete so that their `i`, `a`, `di` make no
  English or Italian) checked against each language's alphabet (ł ř å ơ are no English), then seeded
  langdetect when it is sure, any Latin-script language; a turn that neither decides gets no verdict
  (there is no default language).
- Quoted spans (「」『』“”‘’«» and ASCII quotes that touch no letter) are set aside when the text
  around them decides: `「ありがとう」在日语里是什么意思?` is Chinese.
- Very short turns (under `MIN_CJK_CHARS` CJK characters and under `MIN_LATIN_WORDS` words) and
  code-only turns get no verdict (None).

A dialogue is decided by the verdicts of its turns weighted by their length (`detect_dialogue`),
which also flags drift: the user writes in one language, the assistant answers in another.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass

from datagen.record import Conversation
from datagen.text.script import (
    _LANGDETECT_MAX_CHARS,
    _LANGDETECT_MIN_WORDS,
    _PROSE_STOPWORD_SHARE,
    _QUOTE_CHARS_RE,
    _QUOTED_RE,
    CJK_CHAR_WEIGHT,
    LANGDETECT_SEED,
    MIN_CJK_CHARS,
    MIN_LATIN_WORDS,
    ScriptCounts,
    _latin_words,
    _opencc_table,
    _script_of,
    _variant_sets,
    detect_script_variant,
    script_counts,
    strip_non_language,
)

# ---------------------------------------------------------------------------------------------------
# Evidence for Chinese against Japanese, Korean and Latin-script words

#: Chinese function characters that Japanese text almost never uses (Simplified and Traditional).
_ZH_MARKERS = frozenset("的了吗呢吧么们这个是我你她它怎没还给让说对很把哪什們這嗎麼說對沒讓")
#: Chinese function characters in general: the grammar of a Chinese sentence that names English
#: terms (`docker compose up 的时候报错 ... 是什么意思?`).
_ZH_FUNCTION = frozenset(
    "的了吗呢吧么们这那个是我你他她它怎没还给让说对很把哪在和与就也都被从要会能可以不有一什为如果时候啊呀嘛"
    "嗎麼們這個沒還給讓說對與從會為時過"
)


@functools.cache
def _zh_evidence() -> frozenset[str]:
    """Characters that tell Chinese from Japanese and Korean: `_ZH_MARKERS` plus the Simplified-only
    characters (OpenCC) that are not also Japanese shinjitai (国 学 会 are both, 语 么 围 广 are not).
    Korean Hanja is Traditional, so none of them occurs in Korean either."""
    jp = {v[0] for v in _opencc_table("JPVariants.txt").values() if v}
    return _ZH_MARKERS | (_variant_sets()[1] - jp)


def _cjk_language(text: str, han: int, kana: int, hangul: int) -> str:
    """ko, ja or zh for text whose CJK characters decide. Hangul and kana outweigh Han unless the
    Han characters read as Chinese (function characters, Simplified-only forms): then they must
    outweigh that Chinese context clearly."""
    evidence = _zh_evidence()
    zh = sum(1 for ch in text if ch in evidence) if han else 0
    if hangul and hangul >= han + kana and (zh == 0 or hangul >= 2 * han):
        return "ko"
    if kana and kana > 2 * zh:
        return "ja"
    return "zh"


# ---------------------------------------------------------------------------------------------------
# Latin-script languages

#: Function words of the Latin-script languages datagen decides by votes.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "the a an and or but of to in on at for with from by is are was were be been being do does did "
        "have has had i you he she it we they my your his her its our their this that these those what "
        "which who whom whose when where why how not no can could will would should may might must shall "
        "me him us them if then than so as about into over under up down out there here all any some "
        "please write give explain tell make help me it's don't i'm can't am very much more most just "
        "also only like get got after before because while s t ll ve re".split()
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
#: Function words of other Latin-script languages, less those a language above also has. They only
#: compete in the vote (so that Polish `i`, `a`, `to` or Indonesian `di` do not make English or
#: Italian); when one of them wins, seeded langdetect names the language.
_OTHER_STOPWORDS: dict[str, frozenset[str]] = {
    "pl": frozenset(
        "i w z na nie się to jest że do jak ale co tak czy po dla o jestem mogę przez od już tylko "
        "bardzo ten ta jaki która który może są być mam ja mnie".split()
    ),
    "cs": frozenset(
        "a je se v na že to z jak ale co jsem jsou není by pro od do už jen také tak mě bych když "
        "proč jsme můžete mohu".split()
    ),
    "sv": frozenset(
        "och att det som en är på för med har inte jag du av till den om ett var vad hur kan ska men "
        "när så också jag mig".split()
    ),
    "da": frozenset(
        "og at det som en er på for med har ikke jeg du af til den om et var hvad hvordan kan skal men "
        "når så også hvorfor mig".split()
    ),
    "fi": frozenset(
        "ja on ei se että hän mutta kun niin jos mitä miten minä sinä tämä ovat oli voi kuin myös "
        "minun sinun voin".split()
    ),
    "tr": frozenset(
        "bir ve bu için ile çok daha gibi ama nasıl neden ben sen o biz siz var yok değil mı mi şey "
        "olarak kadar".split()
    ),
    "id": frozenset(
        "yang dan di ini itu dengan untuk dari tidak saya ada akan bisa apa ke juga atau pada adalah "
        "kamu anda bagaimana cara".split()
    ),
    "vi": frozenset(
        "là và của có không các cho một những được này với người trong để khi thì làm như tôi bạn "
        "nào gì rất".split()
    ),
}
_OTHER_STOPWORDS = {lang: words.difference(*_STOPWORDS.values()) for lang, words in _OTHER_STOPWORDS.items()}


def _index_stopwords() -> dict[str, tuple[str, ...]]:
    index: dict[str, tuple[str, ...]] = {}
    for lang, words in (*_STOPWORDS.items(), *_OTHER_STOPWORDS.items()):
        for w in words:
            index[w] = (*index.get(w, ()), lang)
    return index


#: word -> the vote languages that have it as a function word
_STOPWORD_LANGS = _index_stopwords()

#: Letters beyond a-z that each vote language writes.
_ALPHABET_EXTRA: dict[str, frozenset[str]] = {
    # loanwords (café, naïve, señor) and pinyin (nǐ hǎo, jiāyóu) in English about Chinese
    "en": frozenset("éèêëïîöüçñáàâôûāēīōūǎěǐǒǔǖǘǚǜíóúìòù"),
    "fr": frozenset("àâæçéèêëîïôœùûüÿ"),
    "de": frozenset("äöüßéè"),
    "es": frozenset("áéíóúñüç"),
    "it": frozenset("àèéìíîòóùú"),
    "pt": frozenset("áâãàçéêíóôõúü"),
    "nl": frozenset("éëïöüèáóê"),
}
#: langdetect's languages that are written in Latin script (its answer on Latin words must be one).
_LATIN_LANGDETECT = frozenset(
    "af ca cs cy da de en es et fi fr hr hu id it lt lv nl no pl pt ro sk sl so sq sv sw tl tr vi".split()
)

#: Languages a non-Latin, non-CJK script can mean: the first is the answer when the detector is unsure.
_SCRIPT_LANGS: dict[str, tuple[str, ...]] = {
    "cyrillic": ("ru", "uk", "bg", "mk", "sr"),
    "arabic": ("ar", "fa", "ur"),
    "devanagari": ("hi", "mr", "ne"),
    "greek": ("el",),
    "hebrew": ("he",),
    "thai": ("th",),
}


def _stopword_scores(words: list[str]) -> Counter:
    scores: Counter = Counter()
    for w in words:
        langs = _STOPWORD_LANGS.get(w)
        if langs:
            scores.update(langs)
    return scores


def _latin_vote(words: list[str], scores: Counter | None = None) -> str | None:
    """The language whose function words the text uses clearly most, else None (may be one of
    `_OTHER_STOPWORDS`, which the caller hands to langdetect)."""
    ranked = (scores if scores is not None else _stopword_scores(words)).most_common(2)
    if not ranked:
        return None
    best, top = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else 0
    if top >= 2 and top >= 2 * second and top / max(1, len(words)) >= 0.1:
        return best
    return None


def _foreign_letters(words: list[str], lang: str) -> int:
    """Letters in words that lang's alphabet does not have (ł ř å ơ ... in an `en` vote)."""
    extra = _ALPHABET_EXTRA[lang]
    return sum(1 for w in words if not w.isascii() for c in w if not c.isascii() and c not in extra)


@functools.cache
def _langdetect_factory():
    from langdetect import DetectorFactory, detector_factory

    DetectorFactory.seed = LANGDETECT_SEED
    detector_factory.init_factory()
    return detector_factory._factory


def _langdetect(text: str, candidates: tuple[str, ...] | None = None, min_prob: float = 0.8) -> str | None:
    """Seeded langdetect; with candidates, only those languages can win (the first is the fallback
    when none reaches min_prob); without, its best language when it reaches min_prob, else None."""
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


def _latin_language(words: list[str], scores: Counter) -> tuple[str | None, str]:
    """(language, method) of Latin-script words: a stop-word vote for a language whose alphabet fits
    the letters; else seeded langdetect when it is sure (any Latin-script language it knows; one
    without a stop-word list here must be very sure and not contradict prose-level function words);
    else no verdict. Never a default language."""
    voted = _latin_vote(words, scores)
    if voted in _STOPWORDS and _alphabet_fits(words, voted):
        return voted, "stopwords"
    if len(words) < _LANGDETECT_MIN_WORDS:
        return None, "undecided"
    text = " ".join(words)
    lang = _langdetect(text, None, min_prob=0.9)
    if lang in _STOPWORDS or lang in _OTHER_STOPWORDS:
        return lang, "langdetect"
    # langdetect names rare languages (so, sw, tl, ro, ...) for English jargon and short questions:
    # believe it only when it is very sure and no known language has function words here
    leader, top = scores.most_common(1)[0] if scores else (None, 0)
    prose = leader in _STOPWORDS and top >= 2 and top >= _PROSE_STOPWORD_SHARE * len(words)
    if lang in _LATIN_LANGDETECT and top < 2 and _langdetect(text, None, min_prob=0.99) == lang:
        return lang, "langdetect"
    if prose and _alphabet_fits(words, leader):
        return leader, "stopwords"
    return None, "undecided"


def _alphabet_fits(words: list[str], lang: str) -> bool:
    foreign = _foreign_letters(words, lang)
    return foreign < 2 or foreign * 50 < sum(map(len, words))


# ---------------------------------------------------------------------------------------------------
# Verdicts


@dataclass(slots=True)
class LanguageVerdict:
    """A turn's language (None: no verdict), its Chinese variant when it is Chinese, how it was
    decided (`script`, `stopwords`, `langdetect`, `too_short`, `no_text`, `undecided`) and its
    weight."""

    language: str | None
    variant: str | None = None
    method: str = "script"
    weight: float = 0.0


def _decide(text: str, sc: ScriptCounts) -> tuple[str | None, str]:
    """(language, method) of a stripped text from its script counts (see the module docstring)."""
    c = sc.counts
    han, kana, hangul = c["han"], c["kana"], c["hangul"]
    cjk = han + kana + hangul
    n_words = len(sc.latin_words)
    latin_letters = c["latin"]
    others = {s: n for s, n in c.items() if s in _SCRIPT_LANGS}
    other_total = sum(others.values())

    if cjk < MIN_CJK_CHARS and n_words < MIN_LATIN_WORDS and other_total < 6:
        return None, "too_short"

    cjk_w = cjk * CJK_CHAR_WEIGHT
    if cjk_w >= latin_letters and cjk_w >= other_total and cjk >= MIN_CJK_CHARS:
        if n_words >= MIN_LATIN_WORDS and han == cjk and not any(ch in _ZH_FUNCTION for ch in text):
            # Han names without a Chinese function character in a Latin-script sentence: "My
            # favourite dishes are 宫保鸡丁, 麻婆豆腐 and 红烧肉." is English when its words are prose
            scores = _stopword_scores(sc.latin_words)
            voted = _latin_vote(sc.latin_words, scores)
            if voted in _STOPWORDS and scores[voted] >= _PROSE_STOPWORD_SHARE * n_words:
                return voted, "stopwords"
        return _cjk_language(text, han, kana, hangul), "script"

    if other_total > latin_letters:
        script = max(others, key=others.get)
        cands = _SCRIPT_LANGS[script]
        if len(cands) == 1 or others[script] < 20:
            # too little text for a detector to tell neighbours apart: the script's main language
            return cands[0], "script"
        return _langdetect(text, cands), "langdetect"

    scores = _stopword_scores(sc.latin_words) if n_words else Counter()
    if cjk >= MIN_CJK_CHARS:
        # More Latin letters than CJK mass, but the sentence may still be Chinese naming English terms
        # or quoting an English message: Chinese function characters (or kana, Hangul) frame it and
        # the Latin words are names, not prose (few function words of their own).
        frame = (sum(1 for ch in text if ch in _ZH_FUNCTION) if han else 0) + kana + hangul
        sw = scores.most_common(1)[0][1] if scores else 0
        if frame >= 2 and frame > sw and sw < _PROSE_STOPWORD_SHARE * n_words:
            return _cjk_language(text, han, kana, hangul), "script"

    if n_words < MIN_LATIN_WORDS:
        return None, "too_short"
    return _latin_language(sc.latin_words, scores)


def detect_turn(text: str, *, variant: bool = True) -> LanguageVerdict:
    """Decide the language of one text (see the module docstring for the rules). `variant=False`
    skips the zh-Hans / zh-Hant decision (what `detect_language` does)."""
    stripped = strip_non_language(text)
    sc = script_counts(stripped, strip=False)
    if not sc.counts:
        return LanguageVerdict(None, method="no_text")
    lang, method = _decide(stripped, sc)
    if _QUOTE_CHARS_RE.search(stripped):
        # 「ありがとう」在日语里是什么意思? is Chinese: when the text around the quotes decides, it wins
        quoted = "".join(m.group() for m in _QUOTED_RE.finditer(stripped))
        if quoted:
            outside = _QUOTED_RE.sub(" ", stripped)
            counts = sc.counts - Counter(map(_script_of, quoted))
            counts.pop("other", None)
            if counts:
                olang, omethod = _decide(outside, ScriptCounts(counts, _latin_words(outside)))
                if olang is not None:
                    lang, method = olang, omethod
    zh_variant = detect_script_variant(stripped) if variant and lang == "zh" else None
    return LanguageVerdict(lang, zh_variant, method, sc.weight)


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of text (`zh`, `en`, `ja`, `ko`, ...), or None when it gets no verdict (too
    short, code only, undecided). Use `detect_script_variant` for zh-Hans vs zh-Hant."""
    return detect_turn(text, variant=False).language


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


def detect_dialogue(
    conv: Conversation, *, drift_ok_categories: frozenset[str] = DRIFT_OK_CATEGORIES
) -> DialogueLanguage:
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
