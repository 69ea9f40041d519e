"""Keep one answer within a number of chat messages, however much text Dify sends.

A single 5 MB event once became 40 chat messages in 40 seconds (about 476 were needed). The cap
is ``max_messages`` messages of the platform's ``max_message_chars``:

* while streaming, the text shown is cut at a character budget (cheap: it runs on every edit);
* for the final answer, the text is split exactly as the adapters split it
  (:func:`app.render.markdown.split_markdown`, never inside a code block) and the first
  ``max_messages`` parts are kept. What does not fit goes to the thread as a file where the
  platform can take one (:attr:`app.pipeline.model.PlatformLimits.attaches_files`), else the
  answer is cut with a note.
"""

from __future__ import annotations

from app.render.markdown import split_markdown

# Streamed parts are cut where the text allows (a blank line, a line end), rarely at the very
# limit: the streaming budget leaves that much room so the interim view stays within the cap.
_STREAM_FILL = 0.9


class AnswerSize:
    """The cap for one answer on one platform (see the module docstring)."""

    __slots__ = ("max_chars", "max_messages", "stream_chars")

    def __init__(self, *, max_chars: int, max_messages: int) -> None:
        if max_chars < 1 or max_messages < 1:
            raise ValueError("max_chars and max_messages must be positive")
        self.max_chars = max_chars
        self.max_messages = max_messages
        self.stream_chars = max(1, int(max_chars * max_messages * _STREAM_FILL))

    def streaming(self, text: str) -> str:
        """The part of a still-growing answer to show (the whole text when it fits)."""
        if len(text) <= self.stream_chars:
            return text
        cut = text.rfind("\n", self.stream_chars // 2, self.stream_chars)
        return text[: cut if cut > 0 else self.stream_chars]

    def final(self, text: str) -> tuple[str, bool]:
        """``(text to show, whether it was cut)`` for a finished answer."""
        if len(text) <= self.max_chars:
            return text, False
        # Only what can be shown is split: a 5 MB answer costs no more than a full thread.
        window = text[: self.max_chars * (self.max_messages + 1)]
        parts = split_markdown(window, self.max_chars)
        if len(parts) <= self.max_messages and len(window) == len(text):
            return text, False
        return "\n\n".join(parts[: self.max_messages]), True


__all__ = ["AnswerSize"]
