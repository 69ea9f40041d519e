# ruff: noqa: E501, S311  (sample sentences read best on one line; seeded sampling, not crypto)
"""Redaction speed: microseconds per 1 KB message and MB/s over a 1 MB mixed corpus, one core.

    .venv/bin/python bench/bench_redact.py [--repeat 5]

Messages are UTF-8 sized (1 KB = 1024 bytes of UTF-8, so a Japanese message has ~350
characters). The corpus mixes English, Japanese, Chinese and Thai prose, code, log lines and
the labeled evaluation messages (about one entity per 300 bytes, far denser than real chat).
Targets: < 200 us per 1 KB message, > 10 MB/s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import phonenumbers

from app.redact import get_redactor

EN = (
    "Hi team, the customer wrote back about the delayed shipment. They would like a call "
    "tomorrow morning to go over the new delivery schedule and the revised invoice. Please "
    "check the ticket history before the meeting and let me know if anything is missing. "
)
JA = "お世話になっております。先日の件について、来週の打ち合わせで詳細を確認させてください。資料は共有フォルダにあります。"
ZH = "您好，关于上次的问题，我们已经安排了技术人员跟进，请在明天下午之前确认方案。"
TH = "สวัสดีครับ เรื่องที่คุยกันเมื่อวาน รบกวนช่วยตรวจสอบเอกสารอีกครั้งก่อนประชุมพรุ่งนี้ครับ "
CODE = "def handler(event):\n    for item in event['items'][:100]:\n        total += item.price * 1.08\n"
LOG = "2026-11-23T10:15:30.123Z INFO request_id=3f2a9c1e-4b5d-4f7a-8b9c-0d1e2f3a4b5c took 123ms\n"


def fill(parts: list[str], size: int, rng: random.Random) -> str:
    """Random parts up to exactly ``size`` bytes of UTF-8 (or just under, at a character edge)."""
    out = ""
    while len(out.encode()) < size:
        out += rng.choice(parts)
    while len(out.encode()) > size:
        out = out[:-1]
    return out


def per_message(fn: Callable[[str], object], text: str, repeat: int) -> float:
    n = 2000
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(n):
            fn(text)
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", default="tests/data/redaction_eval.jsonl")
    args = ap.parse_args()
    rng = random.Random(1)
    r = get_redactor()

    def redact(text: str) -> object:
        return r.redact(text)

    typical_en = fill([EN], 1024, rng)
    typical_ja = fill([JA], 1024, rng)
    pii = (
        " Reach me at taro.yamada@example.co.jp or 090-1234-5678, card 4111 1111 1111 1111. "
        "電話は０３－１２３４－５６７８です。"
    )
    with_pii = fill([EN], 1024 - len(pii.encode()), rng) + pii
    mixed = fill([EN, JA, ZH, TH, CODE, LOG], 1024, rng)
    print("per 1 KB message (CPU time of this process, best of runs):")
    for name, text in [
        ("English prose, no PII", typical_en),
        ("Japanese prose, no PII", typical_ja),
        ("mixed prose/code/logs", mixed),
        ("English + 4 entities (email, phones, card)", with_pii),
    ]:
        us = per_message(redact, text, args.repeat)
        print(f"  {name:<44} {len(text.encode()):>5} B  {us:8.1f} us")
    us_matcher = per_message(
        lambda t: list(phonenumbers.PhoneNumberMatcher(t, "JP")), with_pii, args.repeat
    )
    print(
        f"  (for scale: phonenumbers.PhoneNumberMatcher alone on the last one: {us_matcher:.1f} us)"
    )

    rows = [json.loads(line)["text"] for line in Path(args.data).read_text("utf-8").splitlines()]
    prose = [fill([EN, JA, ZH, TH, CODE, LOG], rng.randint(300, 1700), rng) for _ in range(400)]
    # "chat": every ~1 KB message carries one labeled example (about 1 entity per KB, still far
    # denser than real chat); "dense": three per message (about 2.6 per KB), a stress case.
    for name, per_msg in (("chat mix", 1), ("dense mix", 3)):
        corpus: list[str] = []
        size = 0
        while size < 1_048_576:
            msg = rng.choice(prose) + " " + " ".join(rng.sample(rows, per_msg))
            corpus.append(msg)
            size += len(msg.encode())
        best = float("inf")
        found = 0
        for _ in range(args.repeat):
            t0 = time.process_time()
            found = 0
            for msg in corpus:
                found += len(r.redact(msg)[1])
            best = min(best, time.process_time() - t0)
        mb = size / 1_048_576
        print(
            f"1 MB {name}: {len(corpus)} messages, {size} B, {found} entities: "
            f"{best * 1e3:.1f} ms -> {mb / best:.1f} MB/s, {best / len(corpus) * 1e6:.0f} us/message"
        )
    # A calibration point: how fast this machine runs plain Python right now.
    ref = per_message(lambda _: sum(range(1000)), "", args.repeat)
    print(
        f"calibration: sum(range(1000)) takes {ref:.1f} us here (about 5-8 us on a current laptop)"
    )


if __name__ == "__main__":
    main()
