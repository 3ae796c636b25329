"""Starts `veil serve --sandbox` on a free loopback port for the SDK tests."""
import os
import socket
import subprocess
import time

import pytest

DEMO_TOKEN = "veil-demo-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def veil():
    port = _free_port()
    env = dict(os.environ, VEIL_LISTEN=f"127.0.0.1:{port}")
    log = open("/tmp/veil-python-tests.log", "wb")
    proc = subprocess.Popen([os.environ["VEIL_BIN"], "serve", "--sandbox"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("veil exited early; see /tmp/veil-python-tests.log")
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("veil did not start listening in 30 s")
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture()
def client(veil):
    from openai import OpenAI
    return OpenAI(base_url=veil, api_key=DEMO_TOKEN, max_retries=0, timeout=30)
