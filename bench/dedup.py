"""Near-duplicate filtering: the Self-Instruct/Alpaca ROUGE-L pool filter against datagen's
ROUGE-L option and MinHash filter, then the MinHash filter alone on a million prompts.

    .venv/bin/python bench/dedup.py                 # 4,000 prompts + 1,000,000 prompts
    .venv/bin/python bench/dedup.py --million 100000 --n 1000     # quicker

Part 1 (same 4,000 deterministic near-duplicate-rich zh/en prompts, same run):
- baseline: Alpaca's `generate_instruction.py` filter, serial: each prompt's ROUGE-L F-measure
  (`rouge_score`, `_score_lcs` on pre-tokenised prompts as Alpaca does, with datagen's CJK-aware
  tokenizer because rouge_score's default deletes Chinese) against every kept prompt; drop when the
  max is > 0.7, keep-first. Quadratic.
- datagen `NearDupIndex(method="rouge", threshold=0.7)`: unigram LSH blocking + exact ROUGE-L.
- datagen `NearDupIndex("prompt")`: MinHash LSH, character bigrams, Jaccard 0.5.
Part 2: `NearDupIndex("prompt").check_and_add_stream` over 1,000,000 generated prompts with worker
processes for the signatures; rows/s and peak memory (main + workers, sampled from /proc).

Needs `pip install rouge-score` (bench only). Ends with one line:
`rouge_speedup=S rouge_agreement=A minhash_1m_s=T minhash_1m_peak_gb=M`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.text.neardup import NearDupIndex  # noqa: E402
from datagen.text.tokens import CJKTokenizer  # noqa: E402

ZH_TEMPLATES = [
    "写一篇关于{t}的{form}",
    "请解释{t}的基本原理",
    "如何提高{skill}？",
    "给我推荐几本关于{t}的书",
    "比较{t}和{t2}的优缺点",
    "用{lang}实现{algo}",
    "{t}对{field}有什么影响？",
    "帮我制定一个{skill}的学习计划",
    "总结一下{t}的发展历史",
    "为{field}的初学者介绍{t}",
    "{t}未来的发展趋势是什么？",
    "列出{t}的五个常见误区",
    "我想了解{t}，应该从哪里开始？",
    "写一首以{t}为主题的{poem}",
    "分析{t}在{field}中的应用",
]
EN_TEMPLATES = [
    "Write a {form_en} about {t}",
    "Explain the basic principles of {t}",
    "How can I improve my {skill_en}?",
    "Recommend some books about {t}",
    "Compare {t} and {t2}: pros and cons",
    "Implement {algo_en} in {lang}",
    "What impact does {t} have on {field_en}?",
    "Make a study plan for {skill_en}",
    "Summarize the history of {t}",
    "Introduce {t} to a beginner in {field_en}",
    "What is the future of {t}?",
    "List five common misconceptions about {t}",
    "Where should I start if I want to learn {t}?",
    "Write a {poem_en} on the theme of {t}",
    "Analyze the applications of {t} in {field_en}",
]
ZH_TOPICS = (
    "人工智能 区块链 量子计算 气候变化 新能源汽车 元宇宙 基因编辑 太空探索 可再生能源 城市化 在线教育 远程办公 "
    "短视频 数字货币 云计算 大数据 物联网 5G通信 自动驾驶 虚拟现实 机器学习 深度学习 自然语言处理 "
    "中国古代诗词 宋代绘画 唐朝历史 丝绸之路 中医养生 茶文化 书法艺术 京剧 传统节日 儒家思想 "
    "心理健康 睡眠质量 健康饮食 马拉松训练 瑜伽 冥想 时间管理 个人理财 股票投资 创业 "
    "环境保护 垃圾分类 海洋污染 生物多样性 水资源 粮食安全 人口老龄化 乡村振兴"
).split()
EN_TOPICS = (
    "artificial intelligence|blockchain|quantum computing|climate change|electric vehicles|the metaverse|"
    "gene editing|space exploration|renewable energy|urbanization|online education|remote work|"
    "social media|cryptocurrency|cloud computing|big data|the internet of things|self-driving cars|"
    "virtual reality|machine learning|deep learning|natural language processing|ancient Rome|"
    "the Renaissance|the Industrial Revolution|jazz music|impressionist painting|Greek mythology|"
    "mental health|sleep quality|healthy eating|marathon training|yoga|meditation|time management|"
    "personal finance|stock investing|entrepreneurship|ocean pollution|biodiversity|water scarcity|"
    "food security|population aging|public transport|nuclear energy|3D printing|robotics"
).split("|")
FILL = {
    "form": "文章 短文 演讲稿 报告 博客 故事 评论 说明文".split(),
    "form_en": "essay|short article|speech|report|blog post|story|review|explainer".split("|"),
    "skill": "写作能力 英语口语 编程水平 演讲技巧 记忆力 专注力 沟通能力 领导力".split(),
    "skill_en": "writing skills|spoken English|programming skills|public speaking|memory|focus|communication|leadership".split(
        "|"
    ),
    "lang": "Python Java C++ Go Rust JavaScript".split(),
    "algo": "快速排序 二分查找 归并排序 动态规划 广度优先搜索 哈希表 链表反转 最短路径算法".split(),
    "algo_en": "quicksort|binary search|merge sort|dynamic programming|breadth-first search|a hash table|linked list reversal|Dijkstra's algorithm".split(
        "|"
    ),
    "field": "教育 医疗 金融 制造业 农业 交通 娱乐 零售".split(),
    "field_en": "education|healthcare|finance|manufacturing|agriculture|transport|entertainment|retail".split(
        "|"
    ),
    "poem": "五言绝句 七言律诗 现代诗 散文诗 词".split(),
    "poem_en": "sonnet|haiku|limerick|free verse poem|ballad".split("|"),
}
ZH_PREFIX = ["", "", "请", "帮我", "你能", "麻烦", "能不能"]
ZH_SUFFIX = ["", "", "，谢谢", "，要详细一点", "。", "？", "，尽量简洁", "，字数500字左右"]
ZH_SYN = [
    ("写", "撰写"),
    ("解释", "说明"),
    ("如何", "怎样"),
    ("推荐", "介绍"),
    ("总结", "概括"),
    ("分析", "探讨"),
]
EN_PREFIX = ["", "", "Please ", "Can you ", "Could you ", "I need you to "]
EN_SUFFIX = ["", "", " in detail", ", briefly", ".", "?", " for a high school student", " please"]
EN_SYN = [
    ("Write", "Compose"),
    ("Explain", "Describe"),
    ("improve", "boost"),
    ("Recommend", "Suggest"),
    ("Summarize", "Outline"),
    ("Analyze", "Discuss"),
]


# Random topics keep base prompts distinct: Han characters from the common block, pseudo-words
# from syllables (about 10^5 of them).
_HAN = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 3500))
_SYL = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou", "er")]
ZH_TAILS = ["", "", "", "，并举例说明", "，结合{r}的情况", "，重点讲{r}", "，面向{r}的读者", "，不少于三点"]
EN_TAILS = [
    "",
    "",
    "",
    ", with examples",
    ", focusing on {r}",
    " for readers interested in {r}",
    ", considering {r}",
    " in three points",
]


def _zh_phrase(rng: random.Random, scale: int = 1) -> str:
    return "".join(rng.choice(_HAN) for _ in range(rng.randint(2, 6) * scale))


def _en_phrase(rng: random.Random, scale: int = 1) -> str:
    return " ".join(
        "".join(rng.choice(_SYL) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3) * scale)
    )


def _base(rng: random.Random, scale: int = 1) -> tuple[str, str]:
    zh = rng.random() < 0.5
    tpl = rng.choice(ZH_TEMPLATES if zh else EN_TEMPLATES)
    topics, phrase = (ZH_TOPICS, _zh_phrase) if zh else (EN_TOPICS, _en_phrase)
    t = rng.choice(topics) if rng.random() < 0.2 / scale else phrase(rng, scale)
    t2 = phrase(rng)
    fills = {k: rng.choice(v) for k, v in FILL.items()}
    tail = rng.choice(ZH_TAILS if zh else EN_TAILS).format(r=phrase(rng))
    return tpl.format(t=t, t2=t2, **fills) + tail, "zh" if zh else "en"


def _variant(rng: random.Random, text: str, lang: str) -> str:
    ops = rng.sample(range(4), rng.randint(1, 3))
    for op in ops:
        if lang == "zh":
            if op == 0:
                text = rng.choice(ZH_PREFIX) + text
            elif op == 1:
                text = text.rstrip("？?。") + rng.choice(ZH_SUFFIX)
            elif op == 2:
                a, b = rng.choice(ZH_SYN)
                text = text.replace(a, b, 1)
            elif len(text) > 6:
                i = rng.randrange(len(text))
                text = text[:i] + text[i + 1 :]
        else:
            if op == 0:
                p = rng.choice(EN_PREFIX)
                text = p + (text[0].lower() + text[1:] if p else text)
            elif op == 1:
                text = text.rstrip("?.") + rng.choice(EN_SUFFIX)
            elif op == 2:
                a, b = rng.choice(EN_SYN)
                text = text.replace(a, b, 1)
            else:
                words = text.split()
                if len(words) > 4:
                    del words[rng.randrange(1, len(words))]
                text = " ".join(words)
    return text


def prompts(n: int, seed: int = 0, dup_rate: float = 0.3, scale: int = 1) -> Iterator[str]:
    """n deterministic prompts, about dup_rate of them near-duplicates of an earlier one; scale > 1
    makes the random topics longer, so that distinct prompts stay distinct among millions."""
    for text, _ in labelled_prompts(n, seed, dup_rate, scale):
        yield text


def labelled_prompts(
    n: int, seed: int = 0, dup_rate: float = 0.3, scale: int = 1
) -> Iterator[tuple[str, bool]]:
    """`prompts` with a flag: True for a generated variant of an earlier prompt."""
    rng = random.Random(seed)
    recent: list[tuple[str, str]] = []
    for _ in range(n):
        if recent and rng.random() < dup_rate:
            text, lang = rng.choice(recent)
            yield _variant(rng, text, lang), True
        else:
            text, lang = _base(rng, scale)
            recent.append((text, lang))
            if len(recent) > 5000:
                recent.pop(rng.randrange(len(recent)))
            yield text, False


def shingle_settings_table(n: int = 4000, seed: int = 7) -> None:
    """Recall on generated variants and drop rate of distinct prompts, per (ngram, threshold): why
    the prompt default is character bigrams at 0.5."""
    rows = list(labelled_prompts(n, seed, dup_rate=0.3, scale=2))
    texts = [t for t, _ in rows]
    print("  ngram threshold  variants caught  distinct prompts dropped")
    for ngram, thr in ((1, 0.7), (1, 0.5), (2, 0.7), (2, 0.5), (3, 0.5), (5, 0.5)):
        idx = NearDupIndex("prompt", thr, ngram=ngram)
        dup = [d is not None for d in idx.check_and_add_many([str(i) for i in range(n)], texts)]
        var = [d for d, (_, v) in zip(dup, rows, strict=True) if v]
        base = [d for d, (_, v) in zip(dup, rows, strict=True) if not v]
        print(f"  {ngram:5d} {thr:9.1f}  {sum(var) / len(var):15.3f}  {sum(base) / len(base):24.3f}")


def pool_filter_baseline(texts: list[str], threshold: float = 0.7) -> list[bool]:
    """Alpaca's filter, serial: keep when max ROUGE-L F against every kept prompt <= threshold."""
    from rouge_score import rouge_scorer

    tok = CJKTokenizer()
    kept_tokens: list[list[str]] = []
    keep = []
    for t in texts:
        toks = tok.tokenize(t)
        best = 0.0
        for other in kept_tokens:  # Alpaca scores every kept prompt, then takes the max
            f = rouge_scorer._score_lcs(toks, other).fmeasure
            if f > best:
                best = f
        ok = best <= threshold
        keep.append(ok)
        if ok:
            kept_tokens.append(toks)
    return keep


def pairs_scored(texts: list[str], keep: list[bool]) -> int:
    n = kept = 0
    for k in keep:
        n += kept
        kept += k
    return n


class PeakRSS:
    """Samples the RSS of this process plus its children every 0.1 s; `.peak` in bytes. Without
    psutil: this process's peak plus its largest child's peak times the worker count (an upper
    bound)."""

    def __init__(self, workers: int = 1) -> None:
        self.peak = 0
        self.workers = workers
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        try:
            import psutil

            self.proc = psutil.Process()
        except ImportError:
            self.proc = None

    def _run(self) -> None:
        if self.proc is None:
            return
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                total = self.proc.memory_info().rss
                for c in self.proc.children(recursive=True):
                    try:
                        total += c.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            self.peak = max(self.peak, total)
            time.sleep(0.1)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        if self.proc is None:
            import resource

            me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
            self.peak = me + kids * self.workers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4000, help="prompts for the ROUGE-L comparison")
    ap.add_argument("--million", type=int, default=1_000_000, help="prompts for the MinHash-only run")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    texts = list(prompts(args.n, args.seed))
    load = os.getloadavg()[0]
    print(
        f"== part 1: {len(texts):,} prompts (cpu count {os.cpu_count()}, load average {load:.1f}: "
        "the machine is shared, so timings vary with what else runs)"
    )
    t0 = time.perf_counter()
    base_keep = pool_filter_baseline(texts)
    t_base = time.perf_counter() - t0
    n_pairs = pairs_scored(texts, base_keep)
    print(
        f"baseline pool filter (rouge_score, serial): {t_base:8.2f} s  kept {sum(base_keep):,}  "
        f"(<= {n_pairs:,} pairs, {1e6 * t_base / max(1, n_pairs):.1f} us/pair)"
    )

    t0 = time.perf_counter()
    idx = NearDupIndex("prompt", method="rouge", threshold=0.7)
    rouge_keep = [d is None for d in idx.check_and_add_many([str(i) for i in range(len(texts))], texts)]
    t_rouge = time.perf_counter() - t0
    agree = sum(a == b for a, b in zip(base_keep, rouge_keep, strict=True)) / len(texts)
    fn = sum(1 for a, b in zip(base_keep, rouge_keep, strict=True) if not a and b)
    fp = sum(1 for a, b in zip(base_keep, rouge_keep, strict=True) if a and not b)
    print(
        f"datagen ROUGE-L option (LSH {idx.bands}x{idx.rows} + rapidfuzz): {t_rouge:8.3f} s  kept {sum(rouge_keep):,}  "
        f"agreement {agree:.4f} (missed drops {fn}, extra drops {fp})  speedup {t_base / t_rouge:,.0f}x"
    )

    t0 = time.perf_counter()
    mh = NearDupIndex("prompt")
    mh_keep = [d is None for d in mh.check_and_add_many([str(i) for i in range(len(texts))], texts)]
    t_mh = time.perf_counter() - t0
    mh_agree = sum(a == b for a, b in zip(base_keep, mh_keep, strict=True)) / len(texts)
    print(
        f"datagen MinHash (bigram, J>=0.5, LSH {mh.bands}x{mh.rows}): {t_mh:8.3f} s  kept {sum(mh_keep):,}  "
        f"agreement with the ROUGE-L pool filter {mh_agree:.4f} (a different criterion)"
    )

    print("MinHash settings on generated variants (recall) and distinct prompts (false drops):")
    shingle_settings_table()

    # datasketch for reference (signatures only, same shingles)
    try:
        from datasketch import MinHash

        sample = texts[:2000]
        t0 = time.perf_counter()
        for t in sample:
            m = MinHash(num_perm=128)
            m.update_batch([s.encode() for s in set(mh.hasher.shingle_hashes and _shingles(t, mh.ngram))])
        t_ds = (time.perf_counter() - t0) / len(sample)
        t0 = time.perf_counter()
        mh.hasher.signatures(sample)
        t_ours = (time.perf_counter() - t0) / len(sample)
        print(
            f"signature cost per prompt: datasketch MinHash {1e6 * t_ds:.1f} us, datagen numpy {1e6 * t_ours:.1f} us "
            f"({t_ds / t_ours:.1f}x)"
        )
    except ImportError:
        pass

    print(f"== part 2: MinHash filter on {args.million:,} prompts, {args.workers} worker(s) for signatures")
    index = NearDupIndex("prompt")
    dropped = 0
    t0 = time.perf_counter()
    with PeakRSS(args.workers) as mem:
        for _, dup in index.check_and_add_stream(
            ((str(i), t) for i, t in enumerate(prompts(args.million, args.seed + 1, dup_rate=0.1, scale=4))),
            workers=args.workers,
            chunk_size=10_000,
        ):
            dropped += dup is not None
    t_1m = time.perf_counter() - t0
    peak_gb = mem.peak / 2**30
    print(f"load average now {os.getloadavg()[0]:.1f}")
    print(
        f"{args.million:,} prompts in {t_1m:.1f} s ({args.million / t_1m:,.0f} rows/s), dropped {dropped:,} "
        f"near-duplicates, index {len(index):,}, peak memory {peak_gb:.2f} GB (main + workers)"
    )
    print(
        f"rouge_speedup={t_base / t_rouge:.0f} rouge_agreement={agree:.4f} minhash_1m_s={t_1m:.1f} "
        f"minhash_1m_peak_gb={peak_gb:.2f}"
    )
    return 0


def _shingles(text: str, n: int) -> list[str]:
    from datagen.text.tokens import shingles, tokenize

    return shingles(tokenize(text), n)


if __name__ == "__main__":
    raise SystemExit(main())
