"""Characters through the official SDK's generic client (Veil's /v1/characters has no SDK
method) and its `videos.get_character` (Veil's /v1/videos/characters/{id})."""
import time
import uuid

import openai
import pytest

# The SDK marks the Sora methods deprecated; that is not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _completed_video(client):
    video = client.videos.create(model="sora-2", prompt="a cat for a character")
    deadline = time.time() + 60
    while video.status not in ("completed", "failed") and time.time() < deadline:
        time.sleep(1)
        video = client.videos.retrieve(video.id)
    assert video.status == "completed"
    return video.id


@pytest.fixture(scope="module")
def video_id(veil):
    from openai import OpenAI
    return _completed_video(OpenAI(base_url=veil, api_key="veil-demo-token", max_retries=0, timeout=30))


def _name():
    return "py_" + uuid.uuid4().hex[:10]


def test_create_list_get_delete(client, video_id):
    name = _name()
    c = client.post("/characters", cast_to=object,
                    body={"video_id": video_id, "name": name, "description": "a cat", "timestamps": "0-3"})
    assert c["object"] == "character"
    assert c["name"] == name
    assert c["status"] in ("processing", "ready")
    assert c["timestamps"] == {"start": 0, "end": 3}
    for leaked in ("api_key", "token_id", "username", "gen_id", "uuid", "instruction_value"):
        assert leaked not in c
    # Ready once the upstream list has seen it (sandbox: after one list call).
    status = None
    for _ in range(5):
        listing = client.get("/characters", cast_to=object)
        assert listing["object"] == "list"
        mine = [x for x in listing["data"] if x["id"] == c["id"]]
        assert len(mine) == 1
        status = mine[0]["status"]
        if status == "ready":
            break
    assert status == "ready"
    assert all(x["id"] != "char_58" for x in listing["data"])
    assert client.get(f"/characters/{c['id']}", cast_to=object)["status"] == "ready"
    d = client.delete(f"/characters/{c['id']}", cast_to=object)
    assert d == {"id": c["id"], "object": "character.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.get(f"/characters/{c['id']}", cast_to=object)


def test_validation_errors_name_the_param(client, video_id):
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/characters", cast_to=object,
                    body={"video_id": video_id, "name": _name(), "description": "x", "timestamps": "0-5"})
    assert e.value.body["param"] == "timestamps"
    with pytest.raises(openai.BadRequestError) as e:
        client.post("/characters", cast_to=object,
                    body={"video_id": video_id, "name": "bad name!", "description": "x", "timestamps": "0-3"})
    assert e.value.body["param"] == "name"
    name = _name()
    client.post("/characters", cast_to=object,
                body={"video_id": video_id, "name": name, "description": "x", "timestamps": {"start": 0, "end": 2}})
    with pytest.raises(openai.ConflictError):
        client.post("/characters", cast_to=object,
                    body={"video_id": video_id, "name": name.upper(), "description": "x", "timestamps": "0-3"})


def test_sdk_video_character_endpoints(client, video_id):
    name = _name()
    c = client.post("/characters", cast_to=object,
                    body={"video_id": video_id, "name": name, "description": "x", "timestamps": "1-2"})
    if hasattr(client.videos, "get_character"):
        got = client.videos.get_character(c["id"])
        assert (got.id, got.name, got.created_at) == (c["id"], name, c["created_at"])
    else:
        got = client.get(f"/videos/characters/{c['id']}", cast_to=object)
        assert got == {"id": c["id"], "created_at": c["created_at"], "name": name}
    if hasattr(client.videos, "create_character"):
        with pytest.raises(openai.BadRequestError) as e:
            client.videos.create_character(name=_name(), video=("clip.mp4", b"\x00\x00\x00\x18ftypmp42", "video/mp4"))
        assert "POST /v1/characters" in e.value.message
