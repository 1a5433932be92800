"""The examples of ffi/python/README.md, run in order in one namespace: the README's claims
(a streamed reply, save/restore at temperature 0.9, a cancel from another thread, two
threads giving the same replies as one each, the errors) are its own assertions."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
NAMESPACE: dict = {}


def test_readme_has_the_examples():
    text = "\n".join(BLOCKS)
    for needed in ("session.stream(", "Session.restore(", "temperature=0.9", ".cancel", "ThreadPoolExecutor"):
        assert needed in text, needed


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example(index):
    code = compile(BLOCKS[index], f"README.md example {index + 1}", "exec")
    exec(code, NAMESPACE)
