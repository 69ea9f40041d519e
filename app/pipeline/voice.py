"""Voice messages: an audio clip becomes the question through Dify's ``audio-to-text``.

Only when the app has speech-to-text switched on (``/parameters``) and the message has no text.
The transcript then goes through redaction like any typed question; the answer quotes it briefly
so the asker sees what was understood.
"""

from __future__ import annotations

from dataclasses import replace

from app import texts
from app.dify.appcheck import AppParams
from app.dify.client import DifyClient
from app.dify.errors import DifyError
from app.errors import UserFacingError
from app.pipeline.attachments import is_voice
from app.pipeline.inputs import too_long
from app.pipeline.model import Attachment, IncomingMessage

QUOTE_CHARS = 60


def voice_clip(msg: IncomingMessage) -> Attachment | None:
    """The clip to transcribe: the first audio attachment of a message without text."""
    if msg.text.strip():
        return None
    return next((a for a in msg.attachments if is_voice(a)), None)


async def transcribe(
    client: DifyClient, user: str, clip: Attachment, params: AppParams | None
) -> str:
    """The clip's words; :class:`UserFacingError` with a plain sentence when that fails."""
    # Parameters unknown (Dify did not say): try, and let Dify refuse if it must.
    if params is not None and not params.speech_to_text:
        raise UserFacingError(texts.VOICE_OFF, kind="voice")
    if clip.fetch is None:
        raise UserFacingError(texts.VOICE_NO_DOWNLOAD, kind="voice")
    data = await clip.fetch()
    if not data:
        raise UserFacingError(texts.VOICE_EMPTY, kind="voice")
    mime = clip.mime_type if clip.mime_type.lower().startswith("audio/") else "audio/mpeg"
    try:
        text = await client.audio_to_text(
            user=user, filename=clip.name or "voice.mp3", data=data, mime_type=mime
        )
    except DifyError as e:
        raise UserFacingError(
            texts.VOICE_NOT_TRANSCRIBED.format(reason=e.user_message), kind="voice"
        ) from e
    except ValueError as e:  # the client refused the clip's name or type before sending
        raise UserFacingError(texts.VOICE_UNREADABLE, kind="voice") from e
    text = text.strip()
    if not text:
        raise UserFacingError(texts.VOICE_NO_WORDS, kind="voice")
    return text


async def as_question(
    client: DifyClient,
    msg: IncomingMessage,
    clip: Attachment,
    params: AppParams | None,
    *,
    max_chars: int,
) -> IncomingMessage:
    """``msg`` with the clip's transcript as its text and the clip taken off its attachments."""
    text = await transcribe(client, msg.key.dify_user(), clip, params)
    if len(text) > max_chars:
        raise UserFacingError(too_long(len(text), max_chars), kind="voice")
    rest = tuple(a for a in msg.attachments if a is not clip)
    return replace(msg, text=text, attachments=rest)


def quote(transcript: str) -> str:
    """The short notice under the answer: 🎙️ "what is our holiday policy…"."""
    one_line = " ".join(transcript.split())
    cut = one_line if len(one_line) <= QUOTE_CHARS else one_line[: QUOTE_CHARS - 1].rstrip() + "…"
    return texts.VOICE_QUOTE.format(words=cut)


__all__ = ["as_question", "quote", "transcribe", "voice_clip"]
