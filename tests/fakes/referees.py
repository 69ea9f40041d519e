"""Referees for the wire fakes: what the real platforms' own definitions say a request may be.

Our fakes encode what we believe Slack and Dify accept; a referee is a check written from the
platform's side instead, so that a fake and the code under test cannot agree on a mistake:

* :class:`DifySpec` checks every request the fake Dify receives against Dify's own OpenAPI
  document (``tests/specs/dify_openapi_service.json``, a verbatim copy of the one in
  ``shared/specs``) with openapi-core: the path and method exist, required parameters are there,
  and the JSON body fits the schema (types, required properties, enums).
* :func:`slack_call_problems` checks every Web API call the fake Slack receives against slack_sdk:
  the method exists in ``AsyncWebClient``, its required arguments are present, every argument is
  one slack_sdk's signature names, and ``blocks`` pass slack_sdk's Block Kit models and their
  limits (``Block.parse(...).to_dict()`` runs the models' validators), and streaming ``chunks``
  pass its chunk models.

Every problem is recorded in :data:`VIOLATIONS`, and the test session fails any test that leaves
one there (see ``tests/conftest.py``), so a regression is named even where the code under test
would swallow the error. The fake Slack also answers such a call as Slack does
(``invalid_arguments`` / ``invalid_blocks`` / ``invalid_chunks``); the fake Dify answers in Dify's
own words where it knows them (a missing user is "Arg user must be provided.").
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any

#: Every problem a referee found in this process since the last reset: "platform method: why".
VIOLATIONS: list[str] = []

SPEC_PATH = Path(__file__).resolve().parent.parent / "specs" / "dify_openapi_service.json"

# Where the fakes mount Dify's API. The spec's own server is "https://{api_base_url}", whose
# variable holds a path as well as a host; openapi-core cannot match that, so the referee
# replaces it with the fakes' base (the paths under it are the spec's, unchanged).
_BASE = "/v1"


class _Request:
    """The request shape openapi-core reads (its ``Request`` protocol)."""

    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        content_type: str,
        body: bytes | None,
    ) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = "http://127.0.0.1"
        self.path = _BASE + path
        self.full_url_pattern = self.host_url + self.path
        self.method = method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(query),
            header=Headers(headers),
            cookie=ImmutableMultiDict(),
            path={},
        )
        self.content_type = content_type
        self.body = body


class DifySpec:
    """Dify's OpenAPI document, loaded once per process (about 0.6 s)."""

    def __init__(self, spec_path: Path = SPEC_PATH) -> None:
        from openapi_core import OpenAPI
        from openapi_core.validation.request import (
            V30RequestBodyValidator,
            V30RequestParametersValidator,
        )

        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        spec["servers"] = [{"url": "http://127.0.0.1" + _BASE}]
        api = OpenAPI.from_dict(spec)
        # Parameters and body, not security: the fake answers a bad key with Dify's own 401,
        # and tests send wrong keys on purpose.
        self._params = V30RequestParametersValidator(api.spec)
        self._body = V30RequestBodyValidator(api.spec)

    def problem(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str],
        headers: dict[str, str],
        content_type: str,
        body: bytes | None,
    ) -> str | None:
        """Why Dify's spec refuses this request, or None when it is a valid one.

        ``path`` is relative to ``/v1``. Multipart bodies (file and audio uploads) are checked
        for their path and parameters only: openapi-core would need the whole multipart stream,
        which the fake's handlers read themselves.
        """
        from openapi_core.exceptions import OpenAPIError

        multipart = content_type.startswith("multipart/")
        req = _Request(
            method,
            path,
            query,
            headers,
            "application/json" if multipart else content_type,
            None if multipart else body,
        )
        try:
            self._params.validate(req)
            if not multipart:
                self._body.validate(req)
        except OpenAPIError as e:
            return _describe(e)
        return None


def _describe(e: BaseException) -> str:
    """The validator's message plus the first schema error it wraps (the useful part)."""
    text = str(e)
    cause = e.__cause__
    errors = getattr(cause, "schema_errors", None) or getattr(e, "schema_errors", None) or ()
    details = [getattr(x, "message", str(x)) for x in errors][:3]
    if details:
        text = f"{type(e).__name__}: " + "; ".join(details)
    return text


@functools.cache
def dify_spec() -> DifySpec:
    return DifySpec()


# ----------------------------------------------------------------------------------- Slack

# Arguments every slack_sdk method accepts without naming them: the token travels in a header or
# the body, and slack_sdk passes ``**kwargs`` through for the API's newer optional fields.
_ALWAYS_ALLOWED = frozenset({"token"})
# Required arguments that slack_sdk sends as the Authorization header, not as a parameter
# (``apps_connections_open(app_token=...)``): the fake has already taken the header.
_SENT_AS_AUTH = frozenset({"app_token"})


@functools.cache
def _slack_signature(method: str) -> inspect.Signature | None:
    from slack_sdk.web.async_client import AsyncWebClient

    fn = getattr(AsyncWebClient, method.replace(".", "_"), None)
    return inspect.signature(fn) if callable(fn) else None


def slack_call_problems(method: str, params: dict[str, Any]) -> list[str]:
    """What slack_sdk's own definitions say is wrong with this Web API call (empty when fine)."""
    sig = _slack_signature(method)
    if sig is None:
        return [f"{method}: slack_sdk's AsyncWebClient has no such method"]
    problems: list[str] = []
    named = {n for n, p in sig.parameters.items() if n != "self" and p.kind is p.KEYWORD_ONLY}
    required = {
        n
        for n, p in sig.parameters.items()
        if p.kind is p.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    } - _SENT_AS_AUTH
    missing = sorted(required - params.keys())
    if missing:
        problems.append(f"{method}: missing required argument(s) {', '.join(missing)}")
    unknown = sorted(params.keys() - named - _ALWAYS_ALLOWED)
    if unknown:
        problems.append(f"{method}: argument(s) not in slack_sdk's signature: {', '.join(unknown)}")
    blocks = params.get("blocks")
    if blocks is not None:
        problems.extend(f"{method}: {p}" for p in block_kit_problems(blocks))
    chunks = params.get("chunks")
    if chunks is not None:
        problems.extend(f"{method}: {p}" for p in chunk_problems(chunks))
    return problems


def slack_refusal(method: str, params: dict[str, Any]) -> tuple[str, list[str]] | None:
    """Slack's error code and the reasons for a call slack_sdk's definitions refuse, or None."""
    problems = slack_call_problems(method, params)
    if not problems:
        return None
    if any(": blocks" in p for p in problems):
        return "invalid_blocks", problems
    if any(": chunk" in p for p in problems):
        return "invalid_chunks", problems
    return "invalid_arguments", problems


# Task card states and the markdown size Slack documents for streaming chunks.
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})
MARKDOWN_LIMIT = 12_000


def chunk_problems(chunks: Any) -> list[str]:
    """Streaming ``chunks`` that slack_sdk's chunk models (and Slack's documented states) refuse."""
    from slack_sdk.models.messages.chunk import Chunk

    if not isinstance(chunks, list):
        return ["chunks must be a list"]
    for i, c in enumerate(chunks):
        if not isinstance(c, dict):
            return [f"chunk {i} is not an object"]
        try:
            parsed = Chunk.parse(c)
        except TypeError as e:  # a required field missing
            return [f"chunk {i} ({c.get('type')}): {e}"]
        if parsed is None:
            return [f"chunk {i}: unknown type {c.get('type')!r}"]
        unknown = set(c) - set(parsed.attributes)
        if unknown:
            return [f"chunk {i} ({c['type']}): unknown field(s) {sorted(unknown)}"]
        if c["type"] == "task_update" and c.get("status") not in TASK_STATUSES:
            return [f"chunk {i}: status {c.get('status')!r} not in {sorted(TASK_STATUSES)}"]
        if c["type"] == "markdown_text" and len(str(c.get("text", ""))) > MARKDOWN_LIMIT:
            return [f"chunk {i}: markdown_text over {MARKDOWN_LIMIT} characters"]
        if c["type"] == "blocks":
            inner = block_kit_problems(list(c.get("blocks") or []))
            if inner:
                return [f"chunk {i}: {inner[0]}"]
    return []


def block_kit_problems(blocks: Any) -> list[str]:
    """Block Kit problems by slack_sdk's models: unknown block types, missing fields, limits."""
    from slack_sdk.errors import SlackObjectFormationError
    from slack_sdk.models.blocks import Block

    if not isinstance(blocks, list):
        return [f"blocks must be a list, got {type(blocks).__name__}"]
    problems: list[str] = []
    for i, raw in enumerate(blocks):
        if not isinstance(raw, dict):
            problems.append(f"blocks[{i}] is not an object")
            continue
        block = Block.parse(raw)
        if block is None or type(block) is Block:
            problems.append(f"blocks[{i}]: slack_sdk does not know block type {raw.get('type')!r}")
            continue
        try:
            # to_dict() runs the models' validators (lengths, counts, required parts).
            block.to_dict()
        except (SlackObjectFormationError, KeyError, TypeError, ValueError) as e:
            problems.append(f"blocks[{i}] ({raw.get('type')}): {e}")
    return problems
