"""Precision and recall of the recognizers on the labeled set, per entity type and overall.

A gold entity counts as found when a prediction of the same type covers it completely (a
partial cover would leak the rest). A prediction counts as correct when it overlaps a gold
entity of the same type. "covered" also counts gold entities hidden under a different type:
for privacy that is what matters, for the notice the type should be right too.

    .venv/bin/python bench/eval_redact.py [--data tests/data/redaction_eval.jsonl] [--errors 20]

``--check`` exits 1 when a target is missed (recall >= 0.99 and precision >= 0.98 for the
checksum/strict-format types, recall >= 0.95 for phone numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.redact import ENTITY_TYPES, get_redactor

STRICT_RECALL, STRICT_PRECISION, PHONE_RECALL = 0.99, 0.98, 0.95


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="tests/data/redaction_eval.jsonl")
    ap.add_argument("--errors", type=int, default=0, help="print up to N mistakes per type")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args()
    r = get_redactor()
    gold_n: Counter[str] = Counter()
    tp: Counter[str] = Counter()
    covered: Counter[str] = Counter()
    pred_n: Counter[str] = Counter()
    pred_ok: Counter[str] = Counter()
    errors: dict[str, list[str]] = {}
    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines()]
    for row in rows:
        text = row["text"]
        preds = r.find(text)
        for g in row["entities"]:
            gold_n[g["type"]] += 1
            same = any(
                p.type == g["type"] and p.start <= g["start"] and p.end >= g["end"] for p in preds
            )
            anyt = any(p.start <= g["start"] and p.end >= g["end"] for p in preds)
            tp[g["type"]] += same
            covered[g["type"]] += anyt
            if not same:
                got = [(p.type, text[p.start : p.end]) for p in preds]
                errors.setdefault(g["type"], []).append(
                    f"  FN {text[g['start'] : g['end']]!r} in {text!r} got {got}"
                )
        for p in preds:
            pred_n[p.type] += 1
            ok = any(
                g["type"] == p.type and p.start < g["end"] and g["start"] < p.end
                for g in row["entities"]
            )
            pred_ok[p.type] += ok
            if not ok:
                errors.setdefault(p.type, []).append(f"  FP {text[p.start : p.end]!r} in {text!r}")

    print(f"{len(rows)} messages, {sum(gold_n.values())} labeled entities\n")
    print(
        f"{'type':<20} {'gold':>5} {'pred':>5} {'precision':>9} {'recall':>7} "
        f"{'covered':>8}  target"
    )
    failed = False
    for t in ENTITY_TYPES:
        prec = pred_ok[t] / pred_n[t] if pred_n[t] else 1.0
        rec = tp[t] / gold_n[t] if gold_n[t] else 1.0
        cov = covered[t] / gold_n[t] if gold_n[t] else 1.0
        if t == "PHONE":
            ok = rec >= PHONE_RECALL
            target = f"R>={PHONE_RECALL}"
        else:
            ok = rec >= STRICT_RECALL and prec >= STRICT_PRECISION
            target = f"R>={STRICT_RECALL} P>={STRICT_PRECISION}"
        failed |= not ok
        mark = "ok" if ok else "MISSED"
        print(
            f"{t:<20} {gold_n[t]:>5} {pred_n[t]:>5} {prec:>9.4f} {rec:>7.4f} {cov:>8.4f}  "
            f"{target} {mark}"
        )
        for line in errors.get(t, [])[: args.errors]:
            print(line)
    g, p = sum(gold_n.values()), sum(pred_n.values())
    print(
        f"{'overall (micro)':<20} {g:>5} {p:>5} {sum(pred_ok.values()) / p:>9.4f} "
        f"{sum(tp.values()) / g:>7.4f} {sum(covered.values()) / g:>8.4f}"
    )
    neg = [row for row in rows if row["kind"] == "negative"]
    clean = sum(1 for row in neg if not r.find(row["text"]))
    print(f"hard negatives left untouched: {clean}/{len(neg)}")
    return 1 if (args.check and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
