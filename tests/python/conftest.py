"""Starts `veil serve --sandbox` on a free loopback port for the SDK tests.

The stand-in upstream runs in the same process; its key is fixed here (VEIL_SANDBOX_KEY) and its
address read from Veil's start-up banner, so tests can also speak to the stand-in directly
(`standin`): the SDK against the upstream's own OpenAI-shaped endpoints."""
import os
import re
import socket
import subprocess
import tempfile
import time

import pytest

DEMO_TOKEN = "veil-demo-token"
STANDIN_KEY = "sk-sandbox-python-tests-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Veil:
    def __init__(self, url: str, port: int, standin_url: str):
        self.url = url            # http://127.0.0.1:PORT/v1
        self.port = port
        self.standin_url = standin_url  # http://127.0.0.1:PORT (the stand-in upstream)


@pytest.fixture(scope="session")
def veil_process():
    port = _free_port()
    env = dict(os.environ, VEIL_LISTEN=f"127.0.0.1:{port}", VEIL_SANDBOX_KEY=STANDIN_KEY)
    log = tempfile.NamedTemporaryFile(prefix="veil-python-tests-", suffix=".log", delete=False)
    proc = subprocess.Popen([os.environ["VEIL_BIN"], "serve", "--sandbox"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    standin = None
    while time.time() < deadline:
        text = open(log.name, encoding="utf-8", errors="replace").read()
        m = re.search(r"stand-in upstream at (http://127\.0\.0\.1:\d+)", text)
        if m:
            standin = m.group(1)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                pass
        if proc.poll() is not None:
            raise RuntimeError(f"veil exited early; see {log.name}")
        time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"veil did not start listening in 30 s; see {log.name}")
    yield Veil(f"http://127.0.0.1:{port}/v1", port, standin)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def veil(veil_process):
    return veil_process.url


@pytest.fixture()
def client(veil):
    from openai import OpenAI
    return OpenAI(base_url=veil, api_key=DEMO_TOKEN, max_retries=0, timeout=30)


@pytest.fixture()
def standin(veil_process):
    """The official SDK pointed at the stand-in upstream itself (not through Veil)."""
    from openai import OpenAI
    return OpenAI(base_url=veil_process.standin_url + "/v1", api_key=STANDIN_KEY, max_retries=0, timeout=30)
