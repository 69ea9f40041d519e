"""How the long-running service uses Python's cyclic garbage collector.

The default thresholds (700, 10, 10) suit short scripts. In a service streaming a thousand
answers they made the collector the largest single stall on the event loop: a full collection
walks every tracked object, the ~80,000 that importing platform SDKs, pydantic models and friends
leave behind included, and took 75-230 ms each, three or four times per burst; young collections ran
400-460 times in the same 8-10 s. ``bench/bench_core.py --part scale`` shows the effect
(docs/performance.md).

So, once the service has started:

- what start-up built is moved out of the collector's sight (:func:`gc.freeze`): it lives until
  exit and never needs walking;
- a young collection waits for 7,000 new container objects instead of 700; anything that dies
  before then (most of an answer's objects) is freed by reference counting and never walked;
- a full collection is considered after 100 middle ones instead of 10.

This is safe because the answer path creates no reference cycles of its own (the Dify client
breaks the one httpx leaves between a response and its stream), so the collector has little to
find; it still runs, only less often. ``GC_TUNING=false`` keeps Python's defaults, e.g. to
compare.
"""

from __future__ import annotations

import gc

THRESHOLDS = (7000, 5, 100)


def settle_after_start() -> int:
    """Freeze what start-up built and raise the thresholds; returns how many objects froze.

    Call it once, after the service has started and before traffic arrives (the
    ``gc_tuning`` setting decides whether ``dify-bridge serve`` does).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return gc.get_freeze_count()


__all__ = ["THRESHOLDS", "settle_after_start"]
