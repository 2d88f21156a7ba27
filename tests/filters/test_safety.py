"""Safety: lexicon with obfuscation and allow-lists, PII, refusals, and the checker cascade."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datagen.errors import ConfigError
from datagen.filters.base import Verdict
from datagen.filters.safety.checkers import KeywordChecker, parse_judge_output
from datagen.filters.safety.filter import SafetyFilter
from datagen.filters.safety.lexicon import Lexicon
from datagen.filters.safety.pii import find_pii, id_number_valid, luhn_valid, redact_pii
from datagen.filters.safety.refusal import is_refusal
from tests.fakes.openai_fixtures import make_teacher_config_for
from tests.filters.conftest import conv

MATCHER = Lexicon.builtin().matcher()


def terms(text: str) -> set[str]:
    return {h.term for h in MATCHER.find(text)}


# -- lexicon -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "怎么制造炸弹",
        "怎么制 造 炸 弹",
        "怎么制*造*炸*弹",
        "怎麼製造炸彈",
        "怎么制·造·炸·弹",
        "how to make a bomb",
        "How to MAKE A BOMB",
        "how to make a b o m b",
        "how to make a b.o.m.b",
        "ｈｏｗ ｔｏ ｍａｋｅ ａ ｂｏｍｂ",
    ],
)
def test_obfuscated_terms_are_found(text):
    assert terms(text) & {"制造炸弹", "make a bomb"}


@pytest.mark.parametrize(
    "text",
    [
        "我的电脑该装哪款杀毒软件？",
        "双十一秒杀活动",
        "这部电影终于杀青了",
        "How do I kill a process in Linux? Use kill -9.",
        "I need a painkiller",
        "Use methanol, not a different method",
        "We won the hackathon",
    ],
)
def test_allow_list_and_word_boundaries(text):
    assert not {t for t in terms(text) if t in ("杀", "kill", "meth", "hack", "bomb")}, terms(text)


def test_hit_spans_point_into_the_original_text():
    text = "请告诉我怎么製 造 炸 彈好吗"
    hit = next(h for h in MATCHER.find(text) if h.term == "制造炸弹")
    assert text[hit.start : hit.end] == hit.text == "製 造 炸 彈"


def test_user_lexicon_by_path(tmp_path):
    path = tmp_path / "extra.tsv"
    path.write_text(
        "# mine\n秘密配方\tcustom\t3\nsecret recipe\tcustom\t3\nallow\t秘密配方大公开\n"
        "re\t\\bproject-x\\d+\\b\tcustom\t3\n",
        encoding="utf-8",
    )
    m = Lexicon.builtin().extend(Lexicon.load(path)).matcher()
    assert {h.term for h in m.find("告诉我秘密配方")} == {"秘密配方"}
    assert not m.find("秘密配方大公开节目")
    assert {h.category for h in m.find("The secret recipes are here")} == {"custom"}
    assert [h.text for h in m.find("see PROJECT-X42 docs")] == ["PROJECT-X42"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("term\tcat\tnine\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        Lexicon.load(bad)
    assert err.value.line == 1 and err.value.path == str(bad)


# -- PII -----------------------------------------------------------------------------------------------


def _id_with_checksum(body17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body17 + "10X98765432"[sum(int(d) * w for d, w in zip(body17, weights, strict=True)) % 11]


def _luhn_complete(prefix: str) -> str:
    for d in "0123456789":
        if luhn_valid(prefix + d):
            return prefix + d
    raise AssertionError


def test_id_numbers_need_checksum_and_date():
    good = _id_with_checksum("11010519491231002")
    assert id_number_valid(good)
    wrong_check = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert not id_number_valid(wrong_check)
    assert not id_number_valid(_id_with_checksum("11010519491331002"))  # month 13
    assert [p.kind for p in find_pii(f"身份证号{good}。")] == ["id_number"]
    assert find_pii(f"订单号{wrong_check}") == []


def test_bank_cards_need_luhn_and_an_issuer_prefix():
    card = _luhn_complete("622202123456789012")
    assert [p.kind for p in find_pii(f"卡号 {card}")] == ["bank_card"]
    bad = card[:-1] + str((int(card[-1]) + 1) % 10)
    assert find_pii(f"卡号 {bad}") == []
    spaced = " ".join(card[i : i + 4] for i in range(0, len(card), 4))
    assert [p.kind for p in find_pii(spaced)] == ["bank_card"]
    assert find_pii("pi = 3.14159265358979323846") == []


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("我的手机号是13912345678", "phone"),
        ("电话：+86 139-1234-5678", "phone"),
        ("call 139 1234 5678", "phone"),
        ("邮箱 zhang.san@163.com", "email"),
        ("key: sk-proj-a8F3kLmN0pQrStUvWxYz12345", "api_key"),
        ("AKIAIOSFODNN7EXAMPL3 is my key", "api_key"),
        ("-----BEGIN RSA PRIVATE KEY-----", "api_key"),
        ("手机号是１３９１２３４５６７８", "phone"),
    ],
)
def test_pii_kinds(text, kind):
    assert [p.kind for p in find_pii(text)] == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "联系 user@example.com",
        "电话 13800000000（示例）",
        "key = sk-xxxxxxxxxxxxxxxxxxxxxxxx",
        "OPENAI_API_KEY=your-key-here",
        "订单号 202401011234567890",
        "版本 1.13.0 发布于 2024-01-01",
    ],
)
def test_pii_negatives(text):
    assert find_pii(text) == []


def test_redaction_keeps_the_rest_of_the_text():
    assert redact_pii("我的手机是13912345678，邮箱 a.b@163.com。") == "我的手机是[PHONE]，邮箱 [EMAIL]。"


# -- refusals and pair verdicts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "抱歉，我不能提供制造炸弹的方法，这是违法的。",
        "I'm sorry, but I can't help with making a bomb.",
        "I cannot provide instructions for that.",
        "我无法帮你入侵他人的电脑。",
        "听到你这么说我很难过。你并不孤单，请拨打心理援助热线，和专业人士聊一聊。",
        "I'm really sorry you're feeling this way. You're not alone; please call 988 or reach out to someone you trust.",
    ],
)
def test_refusals(answer):
    assert is_refusal(answer)


def test_not_refusals():
    for answer in ("Sure! Here is how to bake bread.", "好的，下面是具体步骤。"):
        assert not is_refusal(answer)


CHECK = KeywordChecker()


def test_a_refusal_that_quotes_the_harmful_request_is_kept():
    reason, ev = CHECK.check_pair("教我怎么制造炸弹", "我不能教你怎么制造炸弹，这是违法行为，也会伤害他人。")
    assert reason is None and ev["refusal"]
    reason, _ = CHECK.check_pair(
        "How do I make a bomb?", "I can't help you make a bomb. If you are in danger, call 911."
    )
    assert reason is None


def test_a_supportive_answer_to_a_self_harm_question_is_kept():
    reason, _ = CHECK.check_pair(
        "如何自杀？", "听到你这么说我很难过。你并不孤单，请拨打心理援助热线寻求帮助。"
    )
    assert reason is None


def test_compliance_and_harmful_content_are_dropped():
    assert (
        CHECK.check_pair("怎么制造炸弹？", "首先准备炸药和雷管，然后按以下步骤组装……")[0]
        == "harmful_compliance"
    )
    assert CHECK.check_pair("写个故事", "故事里他教大家怎么自制炸药：……")[0] == "harmful_content"
    assert (
        CHECK.check_pair("How do I cook meth?", "Here are the steps you need: ...")[0]
        == "unrefused_harmful_request"
    )


def test_harmless_questions_with_sensitive_words_pass():
    for h, a in [
        ("杀毒软件哪个好？", "常见的杀毒软件有很多，选择时要看检测率。"),
        ("How do I kill a zombie process?", "Find its parent with ps and kill the parent process."),
        ("炸弹鱼是什么？", "这是一种网络流行语，指……"),
    ]:
        assert CHECK.check_pair(h, a)[0] is None, h


# -- the step: policies --------------------------------------------------------------------------------


def test_redact_policy_replaces_pii_and_keeps_the_row():
    f = SafetyFilter(policy="redact")
    c = conv(("我的电话是13912345678，帮我写个签名", "好的：张三 | 电话 13912345678"))
    kept, v = f.apply(c, Verdict.of(f.filter(c)))
    assert v.reason == "pii_leak"
    assert kept is not None and "13912345678" not in json.dumps(kept.to_dict(), ensure_ascii=False)
    assert kept.turns[0].assistant == "好的：张三 | 电话 [PHONE]"
    assert kept.tags["safety"] == "redacted:pii_leak"
    harmful = conv(("怎么制造炸弹？", "首先准备炸药和雷管，然后组装……"))
    kept, v = f.apply(harmful, Verdict.of(f.filter(harmful)))
    assert kept is None and v.reason == "harmful_compliance"
    assert f.stats.redacted == 1 and f.stats.dropped == 1


def test_drop_policy_drops_pii():
    f = SafetyFilter()
    v = Verdict.of(f.filter(conv(("hi", "Mail me at zhang.san@163.com"))))
    assert (v.keep, v.reason) == (False, "pii_leak")
    assert v.evidence["checker"] == "keywords" and v.evidence["kinds"] == ["email"]


# -- cascade: moderation endpoint ------------------------------------------------------------------------


class _Moderation(BaseHTTPRequestHandler):
    calls: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Moderation.calls.append(body)
        results = []
        for text in body["input"]:
            bad = "雷管" in text or "detonator" in text
            results.append(
                {
                    "flagged": bad,
                    "categories": {"violence": bad, "harassment": False},
                    "category_scores": {"violence": 0.97 if bad else 0.01, "harassment": 0.0},
                }
            )
        data = json.dumps({"id": "modr-1", "model": "omni-moderation-latest", "results": results}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def moderation_server():
    _Moderation.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Moderation)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_moderation_endpoint_confirms_and_clears_keyword_hits(moderation_server):
    f = SafetyFilter(moderation={"base_url": moderation_server}, audit_rate=0.0)
    assert f.stateful
    rows = [
        conv(("怎么制造炸弹？", "首先准备炸药和雷管，然后组装……"), id="bad"),
        conv(("怎么制造炸弹？", "炸药的历史可以追溯到中国古代的火药发明。"), id="history"),
        conv(("你好", "你好！"), id="clean"),
    ]
    verdicts = f.decide_batch([(c, f.prepare(c)) for c in rows])
    assert [v.keep for v in verdicts] == [False, True, True]
    assert (
        verdicts[0].evidence["checker"] == "moderation"
        and verdicts[0].evidence["keywords"]["checker"] == "keywords"
    )
    assert rows[1].tags["safety.review"] == "cleared by moderation"
    assert len(_Moderation.calls) == 1 and len(_Moderation.calls[0]["input"]) == 2  # only the two hits


# -- cascade: LLM judge through the teacher engine -------------------------------------------------------


def test_judge_reviews_hits_and_an_audit_sample(fake_openai, tmp_path):
    def judge(req):
        text = json.dumps(req["messages"], ensure_ascii=False)
        unsafe = "雷管" in text or "lock picking" in text
        return json.dumps(
            {
                "verdict": "unsafe" if unsafe else "safe",
                "category": "weapons" if unsafe else None,
                "reason": "gives steps" if unsafe else "ok",
            }
        )

    fake_openai.set_responder(judge)
    teacher = make_teacher_config_for(fake_openai, params={}).to_dict()  # the judge sets its own sampling
    f = SafetyFilter(
        judge={"teacher": teacher, "mode": "rubric", "journal": str(tmp_path / "judge.sqlite")},
        audit_rate=1.0,
    )
    rows = [
        conv(("怎么制造炸弹？", "首先准备炸药和雷管……"), id="hit"),
        conv(("怎么制造炸弹？", "炸药的历史可以追溯到古代。"), id="cleared"),
        conv(
            ("How do I open my own front door lock?", "Here is a guide to lock picking any door: ..."),
            id="missed",
        ),
    ]
    verdicts = f.decide_batch([(c, f.prepare(c)) for c in rows])
    assert [v.keep for v in verdicts] == [False, True, False]
    assert verdicts[0].reason == "harmful_compliance" and verdicts[0].evidence["checker"] == "llm_judge"
    assert verdicts[2].reason == "llm_judge_unsafe" and verdicts[2].evidence["via"] == "audit"
    assert rows[1].tags["safety.review"] == "cleared by llm_judge"
    assert fake_openai.requests == 3


def test_judge_failure_falls_back_to_keywords(fake_openai):
    fake_openai.inject("401", times=None)
    teacher = make_teacher_config_for(fake_openai, params={}).to_dict()  # the judge sets its own sampling
    f = SafetyFilter(judge={"teacher": teacher}, audit_rate=0.0)
    row = conv(("怎么制造炸弹？", "首先准备炸药和雷管……"))
    [v] = f.decide_batch([(row, f.prepare(row))])
    assert (v.keep, v.reason) == (False, "harmful_compliance")
    assert v.evidence["llm_judge_error"]


@pytest.mark.parametrize(
    ("reply", "unsafe", "category"),
    [
        ("safe", False, None),
        ("unsafe\nS9", True, "S9"),
        ("Safety: Unsafe\nCategories: Violent\nRefusal: No", True, "Violent"),
        ("Safety: Safe\nCategories: None\nRefusal: Yes", False, None),
        ('{"verdict": "unsafe", "category": "drugs", "reason": "synthesis steps"}', True, "drugs"),
    ],
)
def test_guard_and_rubric_replies_are_parsed(reply, unsafe, category):
    v = parse_judge_output(reply)
    assert (v.unsafe, v.category) == (unsafe, category)
