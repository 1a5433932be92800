"""`python -m tern chat` is the same chat as `tern chat`: the same replies, word for word,
from the same settings (the CLI's defaults: temperature 0.6, seed 42, repeat penalty 1.1),
with /save and /load. The CLI is the truth here; TERN_CLI names its binary
(scripts/test-python.sh builds target/release/tern)."""

import os
import pathlib
import subprocess
import sys

import pytest

CLI = os.environ.get("TERN_CLI", str(pathlib.Path(__file__).resolve().parents[3] / "target/release/tern"))


def run(cmd, stdin):
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(not os.path.exists(CLI), reason="needs the tern CLI (TERN_CLI)")
def test_python_chat_equals_cli_chat(tmp_path):
    assert os.path.exists(CLI)
    script = (
        "Hi! Who are you?\n"
        f"/save {tmp_path}/s.tern\n"
        "Tell me a joke.\n"
        f"/load {tmp_path}/s.tern\n"
        "Tell me a joke.\n"
        "/quit\n"
    )
    args = ["chat", "-m", "smollm2-135m", "--system", "You are a cheerful assistant.", "-n", "48"]
    cli = run([CLI, *args], script)
    py = run([sys.executable, "-m", "tern", *args], script)
    assert py == cli
    replies = [r for r in cli.split("\n\n") if r.strip()]
    assert len(replies) == 3 and replies[1] == replies[2], replies
