"""Rendering cost: microseconds per call (median) for a 2 KB and a 20 KB answer, one core.

    .venv/bin/python bench/bench_render.py [--runs 200]

The edit scheduler renders the whole answer-so-far on every edit, so what matters is the cost
of one render of a long answer, and the total over a streamed answer (one render every ~200
characters, i.e. far more often than Slack's ~1.5 s edit interval allows). Answers mix what
Dify apps produce: headings, paragraphs in English and Japanese, lists, a code block, a table,
links. Sizes are characters.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.slack.render import slack_answer_blocks, to_slack_mrkdwn
from adapters.teams.render import to_teams_markdown
from app.render import markdown as render
from app.render.markdown import split_markdown

SECTION = """## Step {n}: configure the **client**

The Service API streams answers as *server-sent events*; see [the docs](https://docs.dify.ai/guides?id={n}&lang=en).
Dify の **API キー** を発行し、`DIFY_API_KEY` に設定します。詳しくは管理画面を確認してください。

- Create the key in **Settings**
  - keep it in a secret store
  - rotate it every ~~year~~ quarter
- Restart the bridge

```python
async with httpx.AsyncClient(base_url=url) as client:
    resp = await client.post("/chat-messages", json={{"query": q, "user": "u-{n}"}})
```

| Setting | Default | Unit |
|:--|--:|:-:|
| timeout | 30 | s |
| retries | {n} | - |

> Never share the key & never log it.

"""


def answer(size: int) -> str:
    text = ""
    n = 1
    while len(text) < size:
        text += SECTION.format(n=n)
        n += 1
    return text[:size]


def median_us(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    print(f"{'case':44} {'2 KB':>10} {'20 KB':>10}  (median us per call)")

    def cold(fn: Callable[[str], object]) -> Callable[[str], object]:
        # The first render of a text: nothing cached from earlier edits of the same answer.
        def run(md: str) -> object:
            render._HEADS.clear()
            return fn(md)

        return run

    cases: list[tuple[str, Callable[[str], object]]] = [
        ("to_slack_mrkdwn cold (first render)", cold(to_slack_mrkdwn)),
        ("to_slack_mrkdwn warm (re-render, cached head)", to_slack_mrkdwn),
        ("to_slack_mrkdwn cold, final=True", cold(lambda md: to_slack_mrkdwn(md, final=True))),
        ("to_teams_markdown cold", cold(to_teams_markdown)),
        ("split_markdown(limit=3000)", lambda md: split_markdown(md, 3000)),
        (
            "to_slack_mrkdwn per part of split(3000)",
            lambda md: [to_slack_mrkdwn(p, final=True) for p in split_markdown(md, 3000)],
        ),
        ("slack_answer_blocks (12,000)", slack_answer_blocks),
    ]
    small, large = answer(2_000), answer(20_000)
    for name, fn in cases:
        a = median_us(functools.partial(fn, small), args.runs)
        b = median_us(functools.partial(fn, large), max(20, args.runs // 10))
        print(f"{name:44} {a:10.0f} {b:10.0f}")
    for size in (2_000, 20_000):
        md = answer(size)
        render._HEADS.clear()
        t0 = time.perf_counter()
        edits = 0
        for end in range(200, len(md) + 200, 200):
            to_slack_mrkdwn(md[:end])
            edits += 1
        total = time.perf_counter() - t0
        print(
            f"streamed {size // 1000} KB answer, one render per 200 chars: {edits} renders, "
            f"{total * 1e3:.0f} ms CPU in total"
        )


if __name__ == "__main__":
    main()
