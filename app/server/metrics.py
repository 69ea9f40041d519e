"""Prometheus metrics, one registry per service instance (tests run several side by side)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class Metrics:
    """Everything /metrics exposes. Labels stay low-cardinality: never user or thread ids."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter(
            "bridge_events_received", "Platform messages received", ["platform"], registry=r
        )
        self.duplicates = Counter(
            "bridge_events_duplicate", "Retries and duplicates dropped", ["platform"], registry=r
        )
        self.answers = Counter(
            "bridge_answers", "Answers finished, by outcome", ["platform", "outcome"], registry=r
        )
        self.errors = Counter("bridge_errors", "Errors by kind", ["kind"], registry=r)
        self.ttft = Histogram(
            "bridge_dify_time_to_first_token_seconds",
            "From the Dify call to the first answer text",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "bridge_answer_latency_seconds",
            "From the Dify call to the final answer",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.edits = Counter("bridge_edits_sent", "Message edits sent", ["platform"], registry=r)
        self.ratelimited = Counter(
            "bridge_platform_ratelimited", "Platform 429 answers", ["platform"], registry=r
        )
        self.platform_calls_total = Counter(
            "bridge_platform_calls",
            "Platform API calls",
            ["platform", "method", "outcome"],
            registry=r,
        )
        self.active = Gauge("bridge_active_streams", "Answers streaming now", registry=r)
        self.tokens = Counter(
            "bridge_dify_tokens", "Dify tokens used (message_end usage)", ["route"], registry=r
        )
        self.cache = Counter(
            "bridge_answer_cache", "One-shot answer cache lookups", ["route", "result"], registry=r
        )
        self.redacted = Counter(
            "bridge_redacted_entities", "Entities redacted before Dify", ["type"], registry=r
        )
        self.rate_limited_users = Counter(
            "bridge_abuse_limited", "Questions refused by abuse limits", ["scope"], registry=r
        )

        self.forms = Counter(
            "bridge_human_input_forms",
            "Dify Human Input forms: shown, and clicks by outcome (accepted, expired, ...)",
            ["platform", "outcome"],
            registry=r,
        )

    def platform_calls(self, platform: str, method: str, outcome: str) -> None:
        self.platform_calls_total.labels(platform, method, outcome).inc()

    def platform_ratelimited(self, platform: str) -> None:
        self.ratelimited.labels(platform).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
