"""Voice messages: an audio clip is transcribed by Dify and becomes the (redacted) question."""

from __future__ import annotations

from typing import Any

from tests.test_app_modes import ask, attachment, calls, message, new_thread

CLIP = b"ID3 fake mp3 bytes of a short voice clip"


async def test_a_voice_clip_is_transcribed_and_answered_with_a_short_quote(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    spoken = "what is our holiday policy for the winter break and the days around new year"
    dify_app.speech_to_text = True
    dify_app.transcript = spoken
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    clip = attachment("voice.mp3", "audio/mpeg", CLIP, is_audio=True)
    reply = await ask(svc, message(new_thread(), "", attachments=(clip,)))
    assert reply.error is None
    assert reply.final == f"You said: {spoken}"
    assert calls(fake_dify, dify_app, "/chat-messages")[-1].json["query"] == spoken
    assert calls(fake_dify, dify_app, "/files/upload") == []  # the clip is the question
    (notice,) = [n for n in reply.extras.notices if n.startswith("🎙️")]
    assert notice.startswith('🎙️ "what is our holiday policy') and notice.endswith('…"')
    assert len(notice) < 100
    assert reply.events[0][0] == "start"  # the placeholder showed while transcribing


async def test_the_transcript_is_redacted_like_a_typed_question(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.speech_to_text = True
    dify_app.transcript = "please email the report to maria.lopez@example.com today"
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    clip = attachment("clip.m4a", "audio/m4a", CLIP, is_audio=True)
    reply = await ask(svc, message(new_thread(), "", attachments=(clip,)))
    assert reply.error is None
    sent = calls(fake_dify, dify_app, "/chat-messages")[-1].json["query"]
    assert "maria.lopez@example.com" not in sent and "please email the report" in sent
    assert not any("maria.lopez@example.com" in n for n in reply.extras.notices)


async def test_an_audio_file_is_recognised_by_its_type_even_without_the_audio_flag(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.speech_to_text = True
    dify_app.transcript = "book a meeting room"
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    clip = attachment("memo.wav", "audio/wav", CLIP)
    reply = await ask(svc, message(new_thread(), "", attachments=(clip,)))
    assert reply.final == "You said: book a meeting room"
    assert len(calls(fake_dify, dify_app, "/audio-to-text")) == 1


async def test_without_speech_to_text_the_user_is_asked_to_type_instead(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})  # speech_to_text off
    clip = attachment("voice.mp3", "audio/mpeg", CLIP, is_audio=True)
    reply = await ask(svc, message(new_thread(), "", attachments=(clip,)))
    assert reply.error is not None and "cannot listen to voice messages" in reply.error
    assert "type your question" in reply.error
    assert calls(fake_dify, dify_app, "/audio-to-text") == []
    assert calls(fake_dify, dify_app, "/chat-messages") == []


async def test_an_audio_type_dify_cannot_transcribe_gets_a_readable_message(
    make_service: Any, fake_dify: Any, dify_app: Any
) -> None:
    dify_app.speech_to_text = True
    svc = await make_service({"DIFY_API_KEY": dify_app.api_key})
    clip = attachment("voice.flac", "audio/flac", CLIP, is_audio=True)
    reply = await ask(svc, message(new_thread(), "", attachments=(clip,)))
    assert reply.error is not None and "could not transcribe" in reply.error
    assert calls(fake_dify, dify_app, "/chat-messages") == []
