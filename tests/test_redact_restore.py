"""Placeholders in Dify's answer come back as the asker's values, even split across chunks."""

from __future__ import annotations

import pytest

from app.redact import Restorer

VALUES = {"EMAIL_1": "taro@example.jp", "PHONE_2": "090-1234-5678", "CREDIT_CARD_1": "4111"}


def test_final_answer_restores_every_placeholder_form_models_produce() -> None:
    r = Restorer(VALUES)
    answer = (
        "Mail <EMAIL_1>, call &lt;PHONE_2&gt; or PHONE\\_2, card ＜CREDIT_CARD_1＞ "
        "and bare EMAIL_1."
    )
    assert r.final(answer) == (
        "Mail taro@example.jp, call 090-1234-5678 or 090-1234-5678, card 4111 "
        "and bare taro@example.jp."
    )


def test_unknown_placeholders_and_look_alikes_stay_as_written() -> None:
    r = Restorer(VALUES)
    text = "<EMAIL_9> EMAIL_10 MY_EMAIL_1 <div> a < b"
    assert r.final(text) == text


@pytest.mark.parametrize(
    "answer",
    [
        "Sure, I will email <EMAIL_1> and call <PHONE_2> today.",
        "連絡先は＜EMAIL_1＞です。電話は&lt;PHONE_2&gt;。",
        "Bare EMAIL_1 and escaped PHONE\\_2 at the very end EMAIL_1",
        "a < b, T&C, <EMAIL_1><PHONE_2>",
    ],
)
def test_streamed_answer_never_flashes_a_half_placeholder(answer: str) -> None:
    """Every partial view is a prefix of the final text: nothing appears and then changes."""
    r = Restorer(VALUES)
    final = r.final(answer)
    for cut in range(len(answer) + 1):
        shown = r.partial(answer[:cut])
        assert final.startswith(shown), (answer[:cut], shown)
        assert "<EM" not in shown and "&lt;" not in shown.replace("&lt;PHONE_2&gt;", "")
    assert r.partial(answer) == final or final.startswith(r.partial(answer))


def test_answer_split_into_chunks_inside_a_placeholder_is_restored_once_complete() -> None:
    r = Restorer(VALUES)
    chunks = ["Write to <EMA", "IL_", "1> please"]
    text = ""
    shown = []
    for chunk in chunks:
        text += chunk
        shown.append(r.partial(text))
    assert shown == ["Write to ", "Write to ", "Write to taro@example.jp please"]


def test_restorer_never_shows_values_in_its_repr() -> None:
    r = Restorer(VALUES)
    assert "taro" not in repr(r) and "090" not in repr(r)
    assert len(r) == 3


def test_empty_restorer_passes_text_through() -> None:
    assert Restorer({}).partial("x <EMA") == "x <EMA"
