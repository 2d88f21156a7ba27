"""The review server over HTTP (`python -m datagen.review`, a real socket on 127.0.0.1): local
binds only unless asked, row content escaped, decisions only from its own pages."""

from __future__ import annotations

import http.client
import re
from urllib.parse import urlencode, urlsplit

import pytest

from datagen.cli.review import main
from datagen.io import write_jsonl_atomic
from datagen.review.decisions import read_decisions
from datagen.review.index import RunIndex
from tests.review.conftest import serve
from tests.review.small_run import XSS, hhh, make_small_run


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = make_small_run(tmp_path_factory.mktemp("review-server") / "run")
    with RunIndex(run) as ix:
        rids = {
            row_id: ix.rids_of(row_id)[0]
            for row_id in ("hhh-xss", "hhh-a", "hhh-b", "hhh-silent", "plugin-calc")
        }
    with serve(run) as url:
        yield url, run, rids


def _request(url: str, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    data = urlencode(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/x-www-form-urlencoded"} if data else {}
    conn.request(method, path, body=data, headers={**hdrs, **(headers or {})})
    resp = conn.getresponse()
    text = resp.read().decode("utf-8")
    conn.close()
    return resp.status, resp.getheader("location"), text


def _form(url: str, rid: int) -> dict[str, str]:
    status, _, html = _request(url, "GET", f"/row/{rid}")
    assert status == 200
    return {
        "token": re.search(r'name="token" value="([^"]+)"', html).group(1),
        "hash": re.search(r'name="hash" value="([^"]+)"', html).group(1),
    }


def test_a_non_local_bind_is_refused_unless_asked_for(tmp_path, capsys):
    run = make_small_run(tmp_path / "run")
    for host in ("0.0.0.0", "192.168.1.5", "example.com"):
        assert main([str(run), "--host", host]) == 1
        err = capsys.readouterr().err
        assert err == (
            f"Error: --host {host} would let anyone on the network read this run and record decisions; "
            "add --allow-remote if that is what you want\n"
        )
    assert not (run / "review").exists()  # refused before indexing anything
    assert main([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == f"Error: {tmp_path / 'nope'}: no such run directory\n"


def test_row_content_is_escaped(server):
    url, _, rids = server
    status, _, html = _request(url, "GET", f"/row/{rids['hhh-xss']}")
    assert status == 200
    assert XSS not in html
    assert "What does &lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; do?" in html
    status, _, html = _request(url, "GET", "/rows?q=pwned")
    assert status == 200 and XSS not in html and "&lt;script&gt;" in html


def test_pages_answer(server):
    url, _, rids = server
    status, _, html = _request(url, "GET", "/")
    assert status == 200 and "near_dedup" in html and "<svg" in html
    assert 'href="/rows?stage=near_dedup&amp;reason=near_dup"' in html
    status, _, html = _request(url, "GET", f"/row/{rids['plugin-calc']}")
    assert status == 200 and '<code class="call">Calculate("23*47+12")</code>' in html and "1093" in html
    status, _, html = _request(url, "GET", f"/row/{rids['hhh-silent']}")
    assert status == 200 and "the answer has no text" in html and 'name="decision"' not in html
    assert _request(url, "GET", "/row/99999")[0] == 404
    status, location, _ = _request(url, "GET", "/next?status=kept")
    assert status == 303 and location.startswith("/row/")
    assert _request(url, "GET", "/static/review.css")[0] == 200


def test_another_host_name_is_refused(server):
    url, _, _ = server
    port = urlsplit(url).port
    assert _request(url, "GET", "/", headers={"Host": f"attacker.example:{port}"})[0] == 400
    assert _request(url, "GET", "/", headers={"Host": f"localhost:{port}"})[0] == 200


def test_decisions_come_only_from_the_review_page(server):
    url, run, rids = server
    rid = rids["hhh-a"]
    form = _form(url, rid)
    path = f"/row/{rid}"
    assert _request(url, "POST", path, {"decision": "accept", "hash": form["hash"]})[0] == 403
    assert (
        _request(
            url, "POST", path, {"decision": "accept", **form}, headers={"Origin": "http://attacker.example"}
        )[0]
        == 403
    )
    assert not (run / "review.jsonl").exists()

    assert _request(url, "POST", path, {"decision": "reject", **form})[0] == 400  # no reason
    assert (
        _request(url, "POST", path, {"decision": "accept", "token": form["token"], "hash": "0" * 16})[0]
        == 409
    )
    assert _request(url, "POST", f"/row/{rids['hhh-silent']}", {"decision": "accept", **form})[0] == 400
    assert _request(url, "POST", path, {"decision": "edit", "turn": "7", "text": "x", **form})[0] == 400
    assert not (run / "review.jsonl").exists()

    origin = f"http://{urlsplit(url).netloc}"
    status, location, _ = _request(
        url,
        "POST",
        path,
        {"decision": "reject", "reason": "unhelpful", "note": "meh", **form},
        headers={"Origin": origin},
    )
    assert (status, location) == (303, path)
    b_form = _form(url, rids["hhh-b"])
    status, location, _ = _request(
        url,
        "POST",
        f"/row/{rids['hhh-b']}",
        {"decision": "edit", "turn": "0", "text": "长城约两万一千公里。\r\n", "then": "next", **b_form},
    )
    assert status == 303 and location.startswith("/next?") and "after=" in location
    decisions = read_decisions(run / "review.jsonl")
    assert [(d.id, d.decision, d.reason, d.note, d.who, d.hash) for d in decisions[:1]] == [
        ("hhh-a", "reject", "unhelpful", "meh", "tester", form["hash"])
    ]
    assert (decisions[1].turn, decisions[1].text) == (0, "长城约两万一千公里。")
    status, _, html = _request(url, "GET", path)
    assert "unhelpful" in html and "flagged" not in html


def test_a_broken_run_file_is_named_on_the_page(tmp_path):
    run = make_small_run(tmp_path / "run")
    with serve(run) as url:
        with open(run / "review.jsonl", "w", encoding="utf-8") as fh:
            fh.write('{"id": "hhh-a", "decision": "accept"}\n')
        status, _, html = _request(url, "GET", "/rows")
    assert status == 500
    assert f"Error: {run / 'review.jsonl'}:1: hash: missing required field" in html


def test_the_stage_menu_offers_a_run_in_waves_its_reserve(tmp_path):
    run = make_small_run(tmp_path / "run")
    (run / "quota.json").write_text("{}", encoding="utf-8")
    write_jsonl_atomic(run / "reserve.jsonl", [hhh("hhh-spare", "One more poem?", "Here is one more.")])
    with serve(run) as url:
        status, _, html = _request(url, "GET", "/rows")
        assert status == 200
        assert '<option value="final">final (kept)</option>' in html
        assert '<option value="reserve">reserve (kept)</option>' in html
        status, _, html = _request(url, "GET", "/rows?stage=reserve")
    assert status == 200 and "hhh-spare" in html and "hhh-a" not in html
