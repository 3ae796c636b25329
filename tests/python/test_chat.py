"""Chat and models through the official SDK: only base_url and the team token change."""
import openai
import pytest


def test_models_list(client):
    models = list(client.models.list())
    ids = [m.id for m in models]
    assert "gpt-3.5-turbo" in ids
    assert "sora-2" in ids and not any(i.endswith("-yijia") for i in ids)   # vendor names mapped back
    for m in models:
        assert m.object == "model" and isinstance(m.created, int) and m.owned_by
        assert set(m.model_dump(exclude_unset=True)) == {"id", "object", "created", "owned_by"}


def test_models_retrieve(client):
    m = client.models.retrieve("gpt-3.5-turbo")
    assert m.id == "gpt-3.5-turbo" and m.object == "model"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.code == "model_not_found"


def test_chat_non_streaming(client):
    r = client.chat.completions.create(model="gpt-3.5-turbo",
                                       messages=[{"role": "user", "content": "Hello"}])
    assert r.choices[0].message.content
    assert r.usage.total_tokens > 0


def test_chat_streaming_arrives_in_chunks(client):
    chunks = list(client.chat.completions.create(
        model="gpt-3.5-turbo", stream=True, messages=[{"role": "user", "content": "Hello there"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3
    assert text


def test_wrong_token_is_401(veil):
    from openai import OpenAI
    bad = OpenAI(base_url=veil, api_key="not-a-team-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401


def test_stream_usage_chunk_only_when_asked(client):
    """OpenAI sends the final usage chunk (empty `choices`) only with `include_usage`; the upstream
    always does. Veil asks for it, reads it, and drops it for callers who did not ask."""
    plain = list(client.chat.completions.create(model="gpt-3.5-turbo", stream=True,
                                                messages=[{"role": "user", "content": "Hello"}]))
    assert all(c.choices for c in plain)
    assert all(c.usage is None for c in plain)
    asked = list(client.chat.completions.create(model="gpt-3.5-turbo", stream=True,
                                                stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": "Hello"}]))
    assert asked[-1].choices == [] and asked[-1].usage.total_tokens > 0


def test_ambiguous_members_are_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"MODEL": "gpt-4o"})
    assert e.value.code == "ambiguous_member" and e.value.param == "MODEL"
