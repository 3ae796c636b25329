"""client.videos against Veil (sandbox mode) with only base_url and the team token changed."""
import base64
import io

import openai
import pytest

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_create_retrieve_poll_download_list(client):
    video = client.videos.create(prompt="a paper boat on a river", model="sora-2",
                                 seconds="4", size="720x1280",
                                 input_reference=("start.png", io.BytesIO(PNG), "image/png"))
    assert video.id.startswith("video_")
    assert video.status == "queued"
    assert video.size == "720x1280"
    assert video.model == "sora-2"

    again = client.videos.retrieve(video.id)
    assert again.id == video.id
    assert again.status in ("queued", "in_progress", "completed")

    done = client.videos.poll(video.id, poll_interval_ms=500)
    assert done.status == "completed"
    assert done.progress == 100
    extra = done.model_extra or {}
    assert "/clean.mp4" in extra.get("video_url", "")
    assert "/wm.mp4" in extra.get("watermarked_video_url", "")

    content = client.videos.download_content(video.id)
    data = content.read()
    assert len(data) > 100_000
    assert data[4:8] == b"ftyp"

    ids = [v.id for v in client.videos.list(limit=10)]
    assert video.id in ids


def test_create_with_image_url_data_and_errors(client):
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    # This SDK version only uploads files in multipart; the JSON form goes through the raw client.
    from openai.types import Video
    v = client.post("/videos", body={"prompt": "from a data url", "input_reference": {"image_url": data_url}},
                    cast_to=Video)
    assert v.status == "queued"

    with pytest.raises(openai.BadRequestError) as e:
        client.videos.create(prompt="x", size="999x999")
    assert e.value.body["param"] == "size"

    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve("video_does_not_exist")

    with pytest.raises(openai.BadRequestError):
        client.videos.remix(v.id, prompt="again")


def test_moderation_is_a_failed_video(client):
    v = client.videos.create(prompt="nsfw content")
    done = client.videos.poll(v.id, poll_interval_ms=500)
    assert done.status == "failed"
    assert done.error.code == "moderation_blocked"


def test_delete(client):
    v = client.videos.create(prompt="short lived")
    d = client.videos.delete(v.id)
    assert d.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(v.id)
