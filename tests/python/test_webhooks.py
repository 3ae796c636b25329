"""Issue 16 with the official SDK: Veil's webhooks verified by `client.webhooks.unwrap` (and
refused with a wrong secret), the README's receiver run as written, and the events stream read
the way a browser's EventSource reads it (`?token=`).

A Veil of its own is started here (`veil serve --sandbox --config FILE`): FILE gives two teams
webhooks — `demo` to the README's receiver (its port and secret substituted, nothing else), and
`capture` to a receiver in this process that keeps the raw request for the SDK to check."""
import base64
import http.server
import json
import os
import pathlib
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from openai import OpenAI

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RECEIVER = next(b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "webhooks.unwrap" in b)

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
WRONG = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
DEMO_TOKEN = "veil-demo-token"
CAPTURE_TOKEN = "veil-capture-token-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha256(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode()).hexdigest()


class Captured:
    """The raw requests the `capture` team's endpoint received."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()

    def wait(self, n, seconds=40):
        deadline = time.time() + seconds
        while time.time() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.1)
        with self.lock:
            return list(self.requests)


@pytest.fixture(scope="module")
def push(tmp_path_factory):
    work = tmp_path_factory.mktemp("push")
    # The README's receiver, as written but for its port and secret.
    receiver_port = _free_port()
    code = RECEIVER.replace('webhook_secret="whsec_…"', f'webhook_secret="{SECRET}"').replace("9000", str(receiver_port))
    assert SECRET in code and str(receiver_port) in code, "the README receiver's secret or port moved"
    readme_log = open(work / "receiver.log", "w+")
    readme_receiver = subprocess.Popen([sys.executable, "-c", code], stdout=readme_log, stderr=subprocess.STDOUT)

    captured = Captured()

    class Capture(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            with captured.lock:
                captured.requests.append((body, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    capture_server = http.server.HTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=capture_server.serve_forever, daemon=True).start()

    port = _free_port()
    config = work / "veil.yaml"
    config.write_text(f"""
listen: "127.0.0.1:{port}"
upstream:
  base_url: "${{VEIL_UPSTREAM_URL}}"
  api_key: "${{VEIL_UPSTREAM_KEY}}"
videos:
  poll_after_ms: 500
webhooks:
  allow_http: true
  allow_private: ["127.0.0.1"]
  backoff_initial_ms: 200
cors:
  allowed_origins: ["http://localhost:5173"]
  allow_query_token: true
teams:
  - name: demo
    tokens_sha256: ["{_sha256(DEMO_TOKEN)}"]
    webhook:
      url: "http://127.0.0.1:{receiver_port}/"
      secret: "{SECRET}"
  - name: capture
    tokens_sha256: ["{_sha256(CAPTURE_TOKEN)}"]
    webhook:
      url: "http://127.0.0.1:{capture_server.server_address[1]}/hooks"
      secret: "{SECRET}"
""")
    log = tempfile.NamedTemporaryFile(prefix="veil-push-tests-", suffix=".log", delete=False)
    env = dict(os.environ)
    env.pop("VEIL_LISTEN", None)
    proc = subprocess.Popen([os.environ["VEIL_BIN"], "serve", "--sandbox", "--config", str(config)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"veil exited early; see {log.name}")
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"veil did not start in 30 s; see {log.name}")
    yield {"url": f"http://127.0.0.1:{port}/v1", "port": port, "captured": captured, "readme_log": readme_log}
    proc.terminate()
    readme_receiver.terminate()
    capture_server.shutdown()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _client(push, token):
    return OpenAI(base_url=push["url"], api_key=token, max_retries=0, timeout=30)


def test_the_sdk_unwraps_veils_webhook_and_refuses_a_wrong_secret(push):
    client = _client(push, CAPTURE_TOKEN)
    video = client.videos.create(prompt="a paper boat on a river", model="sora-2", seconds="4", size="720x1280")
    got = push["captured"].wait(1)
    assert len(got) == 1, "no webhook within 40 s"
    body, headers = got[0]

    event = client.webhooks.unwrap(body, headers, secret=SECRET)
    assert event.type == "video.completed"
    assert event.data.id == video.id
    assert event.id == headers["webhook-id"] and event.id.startswith("evt_")
    assert event.object == "event"
    assert abs(event.created_at - time.time()) < 120
    assert headers["content-type"] == "application/json"
    # Not by its key any more: no Authorization, no upstream key; only the signature speaks for Veil.
    assert "authorization" not in headers

    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, headers, secret=WRONG)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body.replace(video.id.encode(), b"video_1"), headers, secret=SECRET)
    stale = dict(headers, **{"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)})
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, stale, secret=SECRET)

    # The video itself is finished in Veil without anyone having polled it.
    assert client.videos.retrieve(video.id).status == "completed"


def test_a_moderated_video_is_a_video_failed_webhook(push):
    client = _client(push, CAPTURE_TOKEN)
    before = len(push["captured"].wait(0, seconds=0))
    video = client.videos.create(prompt="an nsfw scene", model="sora-2", seconds="4", size="720x1280")
    got = push["captured"].wait(before + 1)
    events = [client.webhooks.unwrap(b, h, secret=SECRET) for b, h in got[before:]]
    mine = [e for e in events if e.data.id == video.id]
    assert [e.type for e in mine] == ["video.failed"]
    failed = client.videos.retrieve(video.id)
    assert failed.status == "failed" and failed.error.code == "moderation_blocked"


def test_the_readme_receiver_verifies_veils_webhook(push):
    client = _client(push, DEMO_TOKEN)
    video = client.videos.create(prompt="a lighthouse at dusk", model="sora-2", seconds="4", size="720x1280")
    log = push["readme_log"]
    deadline = time.time() + 40
    text = ""
    while time.time() < deadline:
        log.seek(0)
        text = log.read()
        if f"video.completed {video.id}" in text:
            break
        time.sleep(0.2)
    assert f"video.completed {video.id}" in text, text


def test_the_events_stream_as_an_eventsource_reads_it(push):
    client = _client(push, DEMO_TOKEN)
    video = client.videos.create(prompt="a slow sunrise", model="sora-2", seconds="4", size="720x1280")
    url = f"http://127.0.0.1:{push['port']}/v1/videos/{video.id}/events?token={DEMO_TOKEN}"
    req = urllib.request.Request(url, headers={"Accept": "text/event-stream", "Origin": "http://localhost:5173"})
    events = []
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
        name = None
        for raw in r:                      # line by line, as EventSource parses
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    names = [n for n, _ in events]
    assert names[0] == "video.updated" and names[-1] == "video.completed", names
    assert all(n == "video.updated" for n in names[:-1])
    assert events[-1][1]["id"] == video.id and events[-1][1]["status"] == "completed"
    progress = [d["progress"] for _, d in events]
    assert progress == sorted(progress) and progress[-1] == 100

    # Another team's token: 404, like an unknown video.
    other = urllib.request.Request(url.replace(DEMO_TOKEN, CAPTURE_TOKEN))
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(other, timeout=10)
    assert e.value.code == 404
