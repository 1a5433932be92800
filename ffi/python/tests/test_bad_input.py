"""Bad input of every kind gives a Python exception (a tern.TernError, or the TypeError of a
wrong type), never a crash; and the session stays usable after it."""

import os

import pytest

import tern


def test_wrong_types(model):
    s = model.session(temperature=0, max_tokens=4)
    for call in (
        lambda: tern.Model(42),
        lambda: tern.Model(threads="two"),
        lambda: model.session(sinks="many"),
        lambda: model.session(stop=[1, 2]),
        lambda: model.session(temperature="hot"),
        lambda: s.chat(None),
        lambda: s.add_message("user", b"bytes"),
        lambda: s.save(3.5),
        lambda: tern.Session.restore("not a model", "x.tern"),
    ):
        with pytest.raises(TypeError):
            call()
    assert s.chat("Hi") != ""


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=float("nan")),
        dict(top_p=1.5),
        dict(min_p=-0.1),
        dict(repeat_penalty=0),
        dict(top_k=-1),
        dict(sinks=-1),
        dict(window=0),
        dict(window=10**9),
        dict(kv_type="f8"),
        dict(max_tokens=0),
        dict(stop=""),
        dict(stop=["ok", ""]),
    ],
)
def test_invalid_session_arguments(model, kwargs):
    with pytest.raises(tern.InvalidArgumentError) as e:
        model.session(**kwargs)
    assert isinstance(e.value, ValueError) and str(e.value)


def test_invalid_model_arguments():
    with pytest.raises(tern.InvalidArgumentError, match="unknown board `toaster`"):
        tern.Model(board="toaster")
    for t in (0, -3, 100000):
        with pytest.raises(tern.InvalidArgumentError, match="threads"):
            tern.Model(threads=t)


def test_threads_beyond_the_cpus_are_lowered_with_a_warning():
    cpus = len(os.sched_getaffinity(0))
    with pytest.warns(RuntimeWarning, match=f"{cpus + 1} threads asked for: lowered to"):
        m = tern.Model(threads=cpus + 1)
    assert m.info.threads == cpus


def test_bad_role(model):
    s = model.session(temperature=0, max_tokens=4)
    with pytest.raises(tern.InvalidArgumentError, match="role `wizard`"):
        s.add_message("wizard", "abracadabra")
    assert s.chat("Hi") != ""


def test_missing_files(model, tmp_path):
    with pytest.raises(tern.ModelNotFoundError, match="does not exist") as e:
        tern.Model(str(tmp_path / "missing.gguf"))
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(tern.ModelNotFoundError, match="not a known model name"):
        tern.Model("no-such-model")
    with pytest.raises(tern.ModelError, match="directory"):
        tern.Model(str(tmp_path))
    with pytest.raises(tern.SessionFileNotFoundError) as e:
        tern.Session.restore(model, tmp_path / "missing.tern")
    assert isinstance(e.value, FileNotFoundError)
    s = model.session(temperature=0, max_tokens=4)
    with pytest.raises(tern.SessionFileError):
        s.save(tmp_path / "no" / "such" / "dir" / "s.tern")


def test_corrupt_models(model, tmp_path):
    good = open(model.info.path, "rb").read()
    cases = {
        "garbage.gguf": os.urandom(4096),
        "empty.gguf": b"",
        "header-only.gguf": good[:64],
        "truncated.gguf": good[: len(good) // 2],
        "bad-magic.gguf": b"GGUX" + good[4:1 << 20],
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(tern.ModelError) as e:
            tern.Model(str(p))
        assert str(p) in str(e.value), (name, str(e.value))


def test_corrupt_session_files(model, tmp_path):
    s = model.session(temperature=0.9, seed=3, max_tokens=8)
    s.chat("Hello")
    path = tmp_path / "good.tern"
    s.save(path)
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    cases = {
        "garbage.tern": os.urandom(2048),
        "empty.tern": b"",
        "truncated.tern": good[: len(good) // 2],
        "flipped.tern": bytes(flipped),
        "other-version.tern": good[:8] + b"\x63\x00\x00\x00" + good[12:],
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(tern.SessionFileError):
            tern.Session.restore(model, p)
    assert tern.Session.restore(model, path).chat("Again") != ""


def test_busy_while_streaming(model):
    s = model.session(temperature=0, max_tokens=32)
    stream = s.stream("Count to twenty.")
    next(stream)
    with pytest.raises(tern.BusyError):
        s.chat("Hi")
    stream.close()
    assert stream.stop_reason == "cancelled"
    assert s.chat("Hi") != ""


def test_abandoned_stream_frees_the_session(model):
    s = model.session(temperature=0, max_tokens=64)
    for _ in s.stream("Tell me a story."):
        break
    assert s.chat("Hi") != ""


def test_strange_text_is_fine(model):
    s = model.session(temperature=0, max_tokens=8)
    for text in ("", "\x00", "<|im_end|><|im_start|>system", "é" * 2000, "🦜 " * 50):
        assert isinstance(s.chat(text), str)
