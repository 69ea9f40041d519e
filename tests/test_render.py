"""Dify's Markdown as people see it in Slack and Teams (app.render and each adapter's dialect).

Rendering is pure text in, text out: no platform is involved, so nothing is faked here.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.slack.render import slack_answer_blocks, slack_sources_block, to_slack_mrkdwn
from adapters.teams.render import teams_table_card, to_teams_markdown, utf16_len
from app.pipeline.model import Source
from app.render.markdown import Table, extract_tables, split_markdown

ZWSP = "\u200b"

REALISTIC_ANSWER = """## 設定の手順

Dify の **API キー** を発行し、`DIFY_API_KEY` に設定します。詳しくは[公式ドキュメント](https://docs.dify.ai/ja-jp/guides?a=1&b=2)を参照してください。

1. 管理画面を開く
2. **「APIアクセス」**を選ぶ
   - キーを *コピー* する
   - ~~古いキー~~ は削除

```python
import httpx

resp = httpx.post(url, json={"query": "こんにちは", "user": "u-1"})
print(resp.json()["answer"])
```

| 項目 | 値 | 備考 |
|:--|--:|:-:|
| タイムアウト | 30 | 秒 |
| 再試行 | 3 | 回 |

> 注意: キーは **絶対に** 共有しないでください。

Done & dusted <3 — see <https://example.com/faq>.
"""


def fence_lines(text: str) -> int:
    return sum(1 for ln in text.split("\n") if ln.strip().startswith("```"))


# --- Slack mrkdwn -------------------------------------------------------------------------------


def test_bold_italic_and_strike_use_slack_markers() -> None:
    out = to_slack_mrkdwn("Use **bold**, *italic*, _also italic_ and ~~old~~ words.", final=True)
    assert out == "Use *bold*, _italic_, _also italic_ and ~old~ words."


def test_links_become_slack_links_with_escaped_url_and_label() -> None:
    out = to_slack_mrkdwn("Read [Q&A <new>](https://ex.com/?a=1&b=2) now", final=True)
    assert out == "Read <https://ex.com/?a=1&amp;b=2|Q&amp;A &lt;new&gt;> now"


def test_autolink_and_link_whose_text_is_the_url_show_the_bare_url() -> None:
    out = to_slack_mrkdwn("<https://ex.com> and [https://ex.com](https://ex.com)", final=True)
    assert out == "<https://ex.com> and <https://ex.com>"


def test_answer_text_cannot_ping_the_channel_or_inject_markup() -> None:
    out = to_slack_mrkdwn("Hey <!channel> and <@U123> & <b>you</b>", final=True)
    assert "<!channel>" not in out and "<@U123>" not in out
    assert "&lt;!channel&gt;" in out and "&amp;" in out and "&lt;b&gt;you&lt;/b&gt;" in out


def test_javascript_links_are_shown_as_plain_text() -> None:
    assert (
        to_slack_mrkdwn("[click](javascript:alert(1))", final=True)
        == "[click](javascript:alert(1))"
    )
    assert to_slack_mrkdwn("[mail me](mailto:a@b.c)", final=True) == "<mailto:a@b.c|mail me>"


def test_headings_become_bold_lines_without_doubled_markers() -> None:
    out = to_slack_mrkdwn("# Step **one**: setup\n\nText", final=True)
    assert out == "*Step one: setup*\n\nText"


def test_nested_lists_get_bullets_and_indentation() -> None:
    md = "- fruit\n  - apple\n    - green\n- veg\n\n3. third\n4. fourth"
    out = to_slack_mrkdwn(md, final=True)
    assert out == "• fruit\n  ◦ apple\n    ▪ green\n• veg\n\n3. third\n4. fourth"


def test_code_keeps_its_characters_literal_and_drops_the_language() -> None:
    md = "Run `a*b*c` then:\n\n```python\nif a < b and c & d:\n    print('**not bold**')\n```"
    out = to_slack_mrkdwn(md, final=True)
    assert out == (
        "Run `a*b*c` then:\n\n```\nif a &lt; b and c &amp; d:\n    print('**not bold**')\n```"
    )


def test_blockquote_lines_are_prefixed() -> None:
    assert to_slack_mrkdwn("> first\n> second\n\nafter", final=True) == "> first\n> second\n\nafter"


def test_table_becomes_aligned_monospace_block_counting_japanese_as_double_width() -> None:
    md = "| Name | Age |\n|:--|--:|\n| Alice | 30 |\n| 山田 | 4 |"
    out = to_slack_mrkdwn(md, final=True)
    assert out == "```\nName  | Age\n------+----\nAlice |  30\n山田  |   4\n```"


def test_image_becomes_a_link_and_html_is_shown_as_text() -> None:
    out = to_slack_mrkdwn("![chart](https://ex.com/c.png)\n\n<div>hi</div>", final=True)
    assert out == "<https://ex.com/c.png|chart>\n\n&lt;div&gt;hi&lt;/div&gt;"


def test_japanese_bold_gets_zero_width_spaces_so_slack_formats_it() -> None:
    out = to_slack_mrkdwn("これは**重要**です。", final=True)
    assert out == f"これは{ZWSP}*重要*{ZWSP}です。"


def test_japanese_bold_around_brackets_is_bold_even_where_commonmark_refuses() -> None:
    out = to_slack_mrkdwn("**「重要」**です", final=True)
    assert out == f"*「重要」*{ZWSP}です"


# --- Teams Markdown -----------------------------------------------------------------------------


def test_teams_keeps_markdown_emphasis_links_and_code() -> None:
    md = "Use **bold**, *it*, ~~old~~, `x` and [docs](https://ex.com/a(b))."
    out = to_teams_markdown(md, final=True)
    assert out == "Use **bold**, *it*, ~~old~~, `x` and [docs](https://ex.com/a%28b%29)."


def test_teams_headings_become_bold_lines() -> None:
    assert to_teams_markdown("### Summary\n\nText", final=True) == "**Summary**\n\nText"


def test_teams_single_newlines_stay_line_breaks() -> None:
    assert to_teams_markdown("Name: A\nAge: 3", final=True) == "Name: A  \nAge: 3"


def test_teams_escapes_literal_markup_but_leaves_urls_alone() -> None:
    out = to_teams_markdown(r"5 \* 3 and \_x\_ at https://ex.com/a_b_c", final=True)
    assert out == r"5 \* 3 and \_x\_ at https://ex.com/a_b_c"


def test_teams_nested_list_with_code_stays_inside_the_item() -> None:
    out = to_teams_markdown("- step\n\n  ```sh\n  make\n  ```\n- done", final=True)
    assert out == "- step\n\n  ```\n  make\n  ```\n\n- done"


def test_teams_table_as_text_is_a_code_block() -> None:
    out = to_teams_markdown("| a | b |\n|---|---|\n| 1 | 2 |", final=True)
    assert out == "```\na | b\n--+--\n1 | 2\n```"


def test_teams_table_as_card_leaves_a_marker_and_builds_an_adaptive_card() -> None:
    md = "Costs:\n\n| Item | Price |\n|:--|--:|\n| **Tea** | 3 |\n| Cake | 12 |\n\nBye"
    text = to_teams_markdown(md, tables="card", final=True)
    assert text == "Costs:\n\n_(see table below)_\n\nBye"
    [table] = extract_tables(md)
    assert table == Table(["Item", "Price"], [["Tea", "3"], ["Cake", "12"]], ["left", "right"])
    card = teams_table_card(table)
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    grid = card["body"][0]
    assert grid["type"] == "Table" and grid["firstRowAsHeader"] is True
    assert grid["columns"][1]["horizontalCellContentAlignment"] == "Right"
    cells = [[c["items"][0]["text"] for c in row["cells"]] for row in grid["rows"]]
    assert cells == [["Item", "Price"], ["Tea", "3"], ["Cake", "12"]]
    assert grid["rows"][0]["cells"][0]["items"][0]["weight"] == "Bolder"


def test_huge_table_card_stays_small_and_says_how_many_rows_are_missing() -> None:
    table = Table(["id", "text"], [[str(i), "x" * 200] for i in range(500)])
    card = teams_table_card(table)
    assert utf16_len(json.dumps(card, ensure_ascii=False)) < 30_000
    shown = len(card["body"][0]["rows"]) - 1
    assert card["body"][1]["text"] == f"{500 - shown} more rows not shown."


def test_teams_rejects_an_unknown_tables_mode() -> None:
    with pytest.raises(ValueError, match="tables must be"):
        to_teams_markdown("x", tables="html")  # type: ignore[arg-type]


def test_non_text_input_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="expected Markdown text"):
        to_slack_mrkdwn(None)  # type: ignore[arg-type]


# --- Streaming: partial Markdown ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("partial", "slack"),
    [
        ("Answer:\n\n```python\nprint(1)\n", "Answer:\n\n```\nprint(1)\n```"),
        ("Answer:\n\n```python\nprint(1)\n``", "Answer:\n\n```\nprint(1)\n```"),
        ("This is **bol", "This is *bol*"),
        ("This is **bold** and _ita", "This is *bold* and _ita_"),
        ("See [the docs](https://docs.di", "See the docs"),
        ("See [the do", "See the do"),
        ("Run `make te", "Run `make te`"),
        ("Intro\n-", "Intro"),
        ("Intro\n\n## ", "Intro"),
        ("Go to <https://ex", "Go to"),
        ("Costs:\n\n| a | b |\n", "Costs:"),
        ("Costs:\n\n| a | b |\n|--", "Costs:"),
        ("Math: 5*3", "Math: 5*3"),
        ("これは**重要", f"これは{ZWSP}*重要*"),
    ],
)
def test_streaming_tail_never_shows_markup_that_would_jump(partial: str, slack: str) -> None:
    assert to_slack_mrkdwn(partial) == slack


def test_final_answer_is_rendered_exactly_as_written() -> None:
    assert to_slack_mrkdwn("Literal **stars", final=True) == "Literal **stars"
    assert to_teams_markdown("Costs:\n\n| a | b |", final=True) == "Costs:\n\n| a | b |"


def test_every_prefix_of_a_realistic_answer_renders_without_broken_formatting() -> None:
    previous_visible = 0
    for end in range(1, len(REALISTIC_ANSWER) + 1):
        prefix = REALISTIC_ANSWER[:end]
        slack = to_slack_mrkdwn(prefix)
        teams = to_teams_markdown(prefix)
        assert fence_lines(slack) % 2 == 0, prefix
        assert fence_lines(teams) % 2 == 0, prefix
        outside_code = "".join(slack.split("```")[::2])
        assert "**" not in outside_code and "](" not in outside_code, prefix
        previous_visible = max(previous_visible, len(slack))
    assert to_slack_mrkdwn(REALISTIC_ANSWER) == to_slack_mrkdwn(REALISTIC_ANSWER, final=True)


def test_realistic_answer_renders_every_construct_for_slack() -> None:
    out = to_slack_mrkdwn(REALISTIC_ANSWER, final=True)
    assert out.startswith("*設定の手順*\n\n")
    assert "<https://docs.dify.ai/ja-jp/guides?a=1&amp;b=2|公式ドキュメント>" in out
    assert "1. 管理画面を開く" in out and "  • キーを" not in out and "   ◦ キーを" in out
    assert "```\nimport httpx\n" in out
    assert "タイムアウト | 30 |  秒\n再試行       |  3 |  回" in out
    assert out.count("```") == 4
    assert "Done &amp; dusted &lt;3" in out and "<https://example.com/faq>" in out


# --- Splitting ----------------------------------------------------------------------------------


def test_text_that_fits_is_one_unchanged_part() -> None:
    assert split_markdown("short **answer**", 100) == ["short **answer**"]


def test_parts_break_between_blocks_when_possible() -> None:
    md = "A" * 60 + "\n\n" + "B" * 60 + "\n\n" + "C" * 60
    assert split_markdown(md, 130) == ["A" * 60 + "\n\n" + "B" * 60, "C" * 60]


def test_long_code_block_is_closed_and_reopened_with_its_language() -> None:
    md = "Intro\n\n```python\n" + "\n".join(f"x{i} = {i}" for i in range(100)) + "\n```\n\nEnd"
    parts = split_markdown(md, 200)
    assert all(len(p) <= 200 for p in parts)
    code_parts = [p for p in parts if "x5 = 5" in p or "x50 = 50" in p or "x99 = 99" in p]
    assert len(code_parts) == 3
    for part in parts:
        assert fence_lines(part) % 2 == 0
    assert all(p.startswith("```python\n") for p in parts[1:-1])


def test_long_japanese_paragraph_is_cut_after_a_full_stop() -> None:
    md = "これは長い文章です。" * 50
    parts = split_markdown(md, 95)
    assert all(len(p) <= 95 and p.endswith("。") for p in parts)
    assert "".join(parts) == md


def test_long_table_repeats_its_header_in_every_part() -> None:
    md = "| id | name |\n|---|---|\n" + "".join(f"| {i} | n{i} |\n" for i in range(60))
    parts = split_markdown(md, 150)
    assert len(parts) > 1
    assert all(p.startswith("| id | name |\n|---|---|\n") for p in parts)
    rows = [ln for p in parts for ln in p.split("\n")[2:] if ln]
    assert rows == [f"| {i} | n{i} |" for i in range(60)]


def test_a_word_longer_than_the_limit_is_cut_hard_but_never_inside_an_emoji() -> None:
    family = "👨\u200d👩\u200d👧"
    parts = split_markdown("x" * 9 + family + "y" * 20, 10)
    assert all(len(p) <= 10 for p in parts)
    assert any(family in p for p in parts)


@pytest.mark.parametrize("bad", [0, -5, True, 2.5])
def test_split_rejects_a_nonsensical_limit(bad: object) -> None:
    with pytest.raises(ValueError, match="limit must be"):
        split_markdown("text", bad)  # type: ignore[arg-type]


_words = st.text(alphabet="abcdefghij 日本語です。.!*_-", min_size=1, max_size=80)
_para = st.lists(_words, min_size=1, max_size=4).map(
    lambda ws: "\n".join(w.strip() or "x" for w in ws)
)
_fence = st.tuples(st.sampled_from(["", "python", "json"]), st.lists(_words, max_size=30)).map(
    lambda t: f"```{t[0]}\n" + "\n".join(t[1]) + "\n```"
)
_bullets = st.lists(_words, min_size=1, max_size=6).map(
    lambda ws: "\n".join(f"- {w.strip() or 'x'}" for w in ws)
)
_doc = st.lists(st.one_of(_para, _fence, _bullets), min_size=1, max_size=12).map("\n\n".join)


def _content(text: str) -> str:
    kept = [ln for ln in text.split("\n") if not ln.strip().startswith("```")]
    return "".join("".join(kept).split())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(md=_doc, limit=st.integers(min_value=30, max_value=600))
def test_split_parts_fit_keep_all_content_and_never_break_a_code_block(md: str, limit: int) -> None:
    parts = split_markdown(md, limit)
    assert all(len(p) <= limit for p in parts)
    assert _content("\n".join(parts)) == _content(md)
    for part in parts:
        assert fence_lines(part) % 2 == 0, part


# --- Slack blocks -------------------------------------------------------------------------------


def test_sources_block_lists_each_document_once_with_links() -> None:
    sources = [
        Source(position=2, title="Pricing <2026>", url="https://ex.com/p?a=1&b=2"),
        Source(position=1, title="FAQ", url=None),
        Source(position=3, title="Pricing <2026>", url="https://ex.com/p?a=1&b=2"),
        Source(position=4, title="Bad", url="javascript:alert(1)"),
    ]
    block = slack_sources_block(sources)
    assert block == {
        "type": "context",
        "elements": [
            {
                "type": "mrkdwn",
                "text": "Sources: 1. FAQ · 2. <https://ex.com/p?a=1&amp;b=2|Pricing &lt;2026&gt;>"
                " · 3. Bad",
            }
        ],
    }


def test_sources_block_shows_a_count_beyond_max_items_and_stays_under_slack_limits() -> None:
    sources = [
        Source(position=i, title=f"Doc {i} " + "t" * 300, url=f"https://ex.com/{i}")
        for i in range(40)
    ]
    block = slack_sources_block(sources, max_items=30)
    text = block["elements"][0]["text"]
    assert len(block["elements"]) <= 10 and len(text) <= 2000
    assert text.endswith("more") and "1. <https://ex.com/0|Doc 0 " in text
    assert slack_sources_block(sources, max_items=2)["elements"][0]["text"].endswith("· +38 more")


def test_sources_block_needs_at_least_one_source() -> None:
    with pytest.raises(ValueError, match="no sources"):
        slack_sources_block([])


def test_final_answer_is_one_markdown_block_with_tables_as_code() -> None:
    blocks = slack_answer_blocks("# Hi\n\n| a | b |\n|--|--|\n| 1 | 2 |\n\n**done**")
    assert blocks == [
        {"type": "markdown", "text": "# Hi\n\n```\na | b\n--+--\n1 | 2\n```\n\n**done**"}
    ]


def test_very_long_final_answer_becomes_several_blocks_within_the_limit() -> None:
    md = "\n\n".join(f"Paragraph {i}: " + "word " * 200 for i in range(30))
    blocks = slack_answer_blocks(md)
    assert len(blocks) > 1 and all(len(b["text"]) <= 12_000 for b in blocks)
    assert slack_answer_blocks("   ") == []
    with pytest.raises(ValueError, match="limit must be"):
        slack_answer_blocks("x", limit=20_000)


def test_utf16_length_counts_emoji_twice_and_japanese_once() -> None:
    assert utf16_len("日本語") == 3
    assert utf16_len("a👍") == 3


def test_streaming_a_long_answer_renders_the_same_as_rendering_it_fresh() -> None:
    from app.render import markdown as render

    answer = "\n\n".join(
        f"## Part {i}\n\nText with **bold** and [a link](https://ex.com/{i}).\n\n"
        f"- item {i}\n- item {i + 1}\n\n```python\nx = {i}\n\ny = {i}\n```\n\n"
        f"| k | v |\n|---|---|\n| {i} | 日本語 |\n\n> quote {i}"
        for i in range(30)
    )
    assert len(answer) > 4_000
    streamed = []
    for end in range(150, len(answer) + 150, 150):
        streamed.append(
            (answer[:end], to_slack_mrkdwn(answer[:end]), to_teams_markdown(answer[:end]))
        )
    for prefix, slack, teams in streamed[::7]:
        render._HEADS.clear()
        assert to_slack_mrkdwn(prefix) == slack
        assert to_teams_markdown(prefix) == teams


@pytest.mark.parametrize(
    ("partial", "block_text"),
    [
        ("This is **bol", "This is **bol**"),
        ("See [the docs](https://docs.di", "See the docs"),
        ("Code:\n\n```python\nprint(1)\n", "Code:\n\n```python\nprint(1)\n```"),
        ("- step\n\n  ```sh\n  make", "- step\n\n  ```sh\n  make\n  ```"),
        ("Costs:\n\n| a | b |", "Costs:"),
    ],
)
def test_streaming_markdown_block_gets_a_repaired_tail(partial: str, block_text: str) -> None:
    assert slack_answer_blocks(partial, final=False) == [{"type": "markdown", "text": block_text}]


def test_every_prefix_streamed_as_markdown_blocks_keeps_code_fences_balanced() -> None:
    for end in range(1, len(REALISTIC_ANSWER) + 1):
        for block in slack_answer_blocks(REALISTIC_ANSWER[:end], final=False):
            assert fence_lines(block["text"]) % 2 == 0, REALISTIC_ANSWER[:end]


def test_text_already_shown_while_streaming_only_grows() -> None:
    # Tables re-align their columns as rows arrive; everything else must only ever be appended
    # to (the last visible line may still change).
    start = REALISTIC_ANSWER.index("| 項目")
    answer = REALISTIC_ANSWER[:start] + REALISTIC_ANSWER[REALISTIC_ANSWER.index("> 注意") :]

    def blocks_text(md: str) -> str:
        return "\n\n".join(b["text"] for b in slack_answer_blocks(md, final=False))

    for render_fn in (to_slack_mrkdwn, to_teams_markdown, blocks_text):
        shown = ""
        for end in range(1, len(answer) + 1):
            now = render_fn(answer[:end])
            settled = shown.rsplit("\n", 1)[0] if "\n" in shown else ""
            assert now.startswith(settled), (render_fn, answer[:end])
            shown = now


def test_pathologically_nested_markup_renders_as_text_instead_of_crashing() -> None:
    for md in ("*a " * 2000 + " a*" * 2000, "*a " * 3000, "[" * 3000 + "a" + "](u)" * 3000):
        for out in (to_slack_mrkdwn(md), to_teams_markdown(md), to_slack_mrkdwn(md, final=True)):
            assert out.count("a") == md.count("a")


def test_markdown_block_answers_cannot_notify_the_channel_or_people() -> None:
    [block] = slack_answer_blocks("Hey <!channel>, <!here> and <@U123ABC>: see `<!DOCTYPE html>`")
    text = block["text"]
    assert "<!channel" not in text and "<!here" not in text and "<@U" not in text
    assert text.replace(ZWSP, "") == "Hey <!channel>, <!here> and <@U123ABC>: see `<!DOCTYPE html>`"


def test_bold_over_a_line_break_is_bold_on_each_line_in_slack() -> None:
    assert to_slack_mrkdwn("**first line\nsecond line** end", final=True) == (
        "*first line*\n*second line* end"
    )
