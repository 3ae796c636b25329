"""The README's examples, run as written against `veil serve --sandbox`.

Every ```python block of the README is a test, and so is the `curl` example. The only change
made to them: the address `127.0.0.1:8080` becomes the test's Veil (started on a free port).
Each runs in a fresh directory holding a copy of `examples/`, as if run from the repository."""
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PY_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
SH_BLOCKS = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
CURL = next(b for b in SH_BLOCKS if b.lstrip().startswith("curl -N http://127.0.0.1:8080/v1/chat/completions"))

# The upstream always ends a stream with a usage chunk (`choices: []`), which OpenAI sends only
# when `stream_options.include_usage` is set; the README's streaming example reads
# `chunk.choices[0]`, so it runs only because Veil drops that chunk for callers who did not ask.


# The webhook receiver (a server that runs until stopped) is run as written by test_webhooks.py,
# against Veil's own deliveries.
RECEIVER_BLOCKS = [b for b in PY_BLOCKS if "webhooks.unwrap" in b]


def _params():
    out = []
    for i, code in enumerate(PY_BLOCKS):
        if code in RECEIVER_BLOCKS:
            continue
        out.append(pytest.param(code, id=f"python-block-{i}"))
    return out


def test_the_readme_has_the_examples_this_file_expects():
    assert len(PY_BLOCKS) == 3, "a README example was added or removed: check the params below"
    assert len(RECEIVER_BLOCKS) == 1
    assert any("videos.create" in b for b in PY_BLOCKS) and any("stream=True" in b for b in PY_BLOCKS)
    assert "start.png" not in README.replace("examples/start.png", ""), "README examples must use files in the repository"
    assert (ROOT / "examples" / "start.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _workdir(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


@pytest.mark.parametrize("code", _params())
def test_python_example_runs_as_written(code, veil_process, tmp_path):
    code = code.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{veil_process.port}")
    r = subprocess.run([sys.executable, "-c", code], cwd=_workdir(tmp_path), capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    if "videos.create" in code:
        mp4 = (tmp_path / "boat.mp4").read_bytes()
        assert mp4[4:8] == b"ftyp" and len(mp4) > 1000
    else:
        assert r.stdout.startswith("Sandbox reply to: Hello")


def test_curl_example_runs_as_written(veil_process, tmp_path):
    cmd = CURL.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{veil_process.port}")
    r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    events = [l[6:] for l in r.stdout.splitlines() if l.startswith("data: ")]
    assert events[-1] == "[DONE]" and "Sandbox" in r.stdout
