"""Properties that must hold for any input, checked with generated text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.redact import Restorer, get_redactor
from app.redact._normalize import fold

PIECES = st.sampled_from(
    [
        "bob@example.com", "090-1234-5678", "０９０－１２３４－５６７８", "4111 1111 1111 1111",
        "123-45-6789", "123456789018", "192.168.0.1", "fe80::1ff:fe23:4567:890a", "password=",
        "xoxb-", "sk-", "app-", "-----BEGIN PRIVATE KEY-----", "://a:b@", "電話", "です", "ครับ",
        "ー", " ", "\n", ":", "=", "#", "(", ")", "+", ".", "-", "/", "@", "T", "x",
    ]
)  # fmt: skip
TEXT = st.lists(st.one_of(PIECES, st.text(max_size=12)), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_findings_are_in_bounds_sorted_and_disjoint_for_any_text(text: str) -> None:
    found = get_redactor().find(text)
    pos = 0
    for f in found:
        assert pos <= f.start < f.end <= len(text)
        pos = f.end
    out, again = get_redactor().redact(text)
    assert again == found
    assert sum(out.count(f"[{t}]") for t in {f.type for f in found}) >= len(found)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_folding_never_moves_an_offset(text: str) -> None:
    assert len(fold(text)) == len(text)


VALUES = {"EMAIL_1": "a@example.com", "PHONE_12": "090-1234-5678", "SECRET_1": "x"}
ANSWER_PIECES = st.sampled_from(
    ["<EMAIL_1>", "&lt;PHONE_12&gt;", "PHONE\\_12", "＜EMAIL_1＞", "EMAIL_1", "<", "&", "E",
     "EMAIL", " ", "ok", "<b>", "T&C", "\\"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(ANSWER_PIECES, st.text(max_size=5)), max_size=20).map("".join))
def test_streamed_view_only_ever_grows_towards_the_final_answer(answer: str) -> None:
    r = Restorer(VALUES)
    final = r.final(answer)
    for cut in range(len(answer) + 1):
        assert final.startswith(r.partial(answer[:cut]))
