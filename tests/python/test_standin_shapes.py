"""The OpenAI endpoints beyond chat and videos, checked by the official SDK itself, twice: against
the stand-in upstream directly (it cannot drift from the shapes OpenAI's clients expect) and
through Veil (`upstream.passthrough`: the same calls, the same answers, the key Veil's).

Each answer is validated strictly against the SDK's own types (pydantic `model_validate`, which
the SDK skips when it parses)."""
import io
import struct
import wave
import zlib

import urllib.request
import openai
import pytest
from pydantic import TypeAdapter

from openai.types import CreateEmbeddingResponse, ImagesResponse, ModerationCreateResponse
from openai.types.audio import Transcription
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent


@pytest.fixture(params=["standin", "veil"])
def api(request, standin, client):
    """The stand-in itself, or Veil in front of it."""
    return standin if request.param == "standin" else client


def strict(model, obj):
    """Validate the SDK object's wire form against its own type (required fields, literals)."""
    return model.model_validate(obj.model_dump(mode="json", by_alias=True, exclude_unset=True))


def test_responses_non_streamed(api):
    r = api.responses.create(model="gpt-4o-mini", input="Hello there", instructions="be brief")
    strict(Response, r)
    assert r.output_text == "Sandbox reply to: Hello there"
    assert r.status == "completed" and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_responses_streamed_typed_events(api):
    events = list(api.responses.create(model="gpt-4o-mini", input="Hello there", stream=True))
    adapter = TypeAdapter(ResponseStreamEvent)
    for e in events:
        adapter.validate_python(e.model_dump(mode="json", by_alias=True, exclude_unset=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Sandbox reply to: Hello there"
    assert events[-1].response.usage.output_tokens > 0


def test_responses_stream_helper_accumulates(api):
    # The SDK's high-level helper rebuilds the final response from the events.
    with api.responses.stream(model="gpt-4o-mini", input="stream helper") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "Sandbox reply to: stream helper"


def test_responses_tool_call_stream(api):
    tools = [{"type": "function", "name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    with api.responses.stream(model="sandbox-tools", input="Oslo", tools=tools) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city":"Oslo"}'


def test_chat_tool_call_stream_accumulates(api):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    chunks = list(api.chat.completions.create(model="sandbox-tools", stream=True, tools=tools,
                                                  messages=[{"role": "user", "content": "find me"}]))
    for c in chunks:
        strict(ChatCompletionChunk, c)
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or []))
    assert args == '{"q":"find me"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    with api.chat.completions.stream(model="sandbox-tools", tools=tools,
                                         messages=[{"role": "user", "content": "find me"}]) as s:
        final = s.get_final_completion()
    strict(ChatCompletion, final)
    assert final.choices[0].message.tool_calls[0].function.name == "lookup"


@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_embeddings(api, fmt):
    r = api.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], dimensions=32, encoding_format=fmt)
    if fmt == "float":
        strict(CreateEmbeddingResponse, r)
        vec = r.data[0].embedding
    else:
        raw = __import__("base64").b64decode(r.data[0].embedding)
        vec = struct.unpack("<32f", raw)
    assert len(vec) == 32 and abs(sum(v * v for v in vec) - 1) < 1e-3
    assert r.usage.prompt_tokens > 0


def _png_ok(data: bytes) -> bool:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body, crc = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n], data[pos + 8 + n:pos + 12 + n]
        assert struct.unpack(">I", crc)[0] == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        if kind == b"IDAT":
            idat += body
        pos += 12 + n
    return len(zlib.decompress(idat)) == h * (1 + 3 * w)


def test_images(api):
    r = api.images.generate(model="gpt-image-1", prompt="a red fox")
    strict(ImagesResponse, r)
    assert _png_ok(__import__("base64").b64decode(r.data[0].b64_json))
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    u = api.images.generate(model="dall-e-3", prompt="a red fox", n=2)
    assert len(u.data) == 2 and _png_ok(urllib.request.urlopen(u.data[0].url, timeout=10).read())


def test_moderations(api):
    r = api.moderations.create(input=["nsfw picture", "a calm lake"])
    strict(ModerationCreateResponse, r)
    assert [x.flagged for x in r.results] == [True, False] and r.results[0].categories.sexual


def test_speech_is_real_audio(api):
    wav = api.audio.speech.create(model="tts-1", voice="alloy", input="hello world", response_format="wav").read()
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000) and w.getnframes() > 0
    mp3 = api.audio.speech.create(model="tts-1", voice="alloy", input="hello world").read()
    assert mp3[:2] == b"\xff\xfb" and len(mp3) % 104 == 0


def test_transcriptions(api):
    r = api.audio.transcriptions.create(model="gpt-4o-transcribe", file=("hello.wav", b"\x00" * 32000, "audio/wav"))
    strict(Transcription, r)
    assert r.text == "Sandbox transcription of hello.wav (32000 bytes)." and r.usage.type == "tokens"
    text = api.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"\x00" * 10, "audio/wav"), response_format="text")
    assert text.strip().startswith("Sandbox transcription of a.wav")


@pytest.mark.parametrize("model,error,status", [
    ("sandbox-rate-limited", openai.RateLimitError, 429),
    ("sandbox-upstream-error", openai.InternalServerError, 500),
    ("sandbox-missing-model", openai.NotFoundError, 404),
])
def test_error_cues_raise_the_sdk_exceptions(api, model, error, status):
    with pytest.raises(error) as e:
        api.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == status
    if status == 404:
        assert e.value.code == "model_not_found"
