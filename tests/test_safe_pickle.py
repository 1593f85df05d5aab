"""The restricted unpickler: numpy arrays and containers load, anything that would run code is refused."""

import io
import os
import pickle

import numpy as np
import pytest

from spectral_ray import safe_pickle


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32", "float64", "uint8", "bool"])
def test_numpy_arrays_round_trip(tmp_path, protocol, dtype):
    a = (np.arange(2 * 5 * 7) % 97).reshape(2, 5, 7).astype(dtype)
    path = tmp_path / "vol.pck"
    path.write_bytes(pickle.dumps(a, protocol=protocol))
    b = safe_pickle.load(path)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    # file objects too
    with open(path, "rb") as f:
        np.testing.assert_array_equal(safe_pickle.load(f), a)


def test_fortran_and_containers_and_scalars():
    obj = {
        "vol": np.asfortranarray(np.random.default_rng(0).random((4, 3))),
        "ids": [1, 2.5, "x", b"raw", (3, 4)],
        "s": {1, 2},
        "f": frozenset({"a"}),
        "scalar": np.float32(1.5),
        "i": np.int64(7),
        "c": 1 + 2j,
        "ba": bytearray(b"ab"),
    }
    for protocol in (2, 4, 5):
        got = safe_pickle.loads(pickle.dumps(obj, protocol=protocol))
        np.testing.assert_array_equal(got["vol"], obj["vol"])
        assert got["ids"] == obj["ids"] and got["s"] == obj["s"] and got["f"] == obj["f"]
        assert got["scalar"] == np.float32(1.5) and got["scalar"].dtype == np.float32
        assert got["i"] == 7 and got["c"] == 1 + 2j and got["ba"] == bytearray(b"ab")


def test_python2_style_numpy_pickle():
    # Python 2 / numpy 1.x: GLOBAL 'numpy.core.multiarray _reconstruct', '__builtin__' names,
    # 8-bit str buffers (decoded with latin-1).
    a = np.array([[1, 2], [300, 4000]], dtype="<u2")
    raw = a.tobytes().decode("latin1")
    data = (
        b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I0\ntS'b'\ntR"
        b"(I1\n(I2\nI2\ntcnumpy\ndtype\n(S'u2'\nI0\nI1\ntR(I3\nS'<'\nNNNI-1\nI-1\nI0\ntbI00\n"
        + b"S" + repr(raw).encode("latin1") + b"\n"
        + b"tb."
    )
    got = safe_pickle.loads(data)
    np.testing.assert_array_equal(got, a)
    assert safe_pickle.loads(b"c__builtin__\nset\n((lp0\nI1\natR.") == {1}


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_code_execution_refused_and_no_side_effect(tmp_path, protocol):
    target = tmp_path / "pwned"
    data = pickle.dumps(_Exploit(target), protocol=protocol)
    path = tmp_path / "evil.pck"
    path.write_bytes(data)
    with pytest.raises(pickle.UnpicklingError) as e:
        safe_pickle.load(path)
    msg = str(e.value)
    assert "refused global" in msg and ("posix.system" in msg or "os.system" in msg or "nt.system" in msg)
    assert str(path) in msg
    assert not target.exists()
    # sanity: the plain unpickler *would* have run it (proves the test payload is real)
    pickle.loads(data)
    assert target.exists()


@pytest.mark.parametrize(
    "module,name",
    [
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("builtins", "open"),
        ("__builtin__", "eval"),
        ("subprocess", "Popen"),
        ("os", "system"),
        ("numpy", "load"),
        ("numpy.testing", "measure"),
        ("_codecs", "decode"),
        ("copyreg", "_reconstructor"),
    ],
)
def test_dangerous_globals_refused(module, name):
    data = f"c{module}\n{name}\n(S'1+1'\ntR.".encode()
    with pytest.raises(pickle.UnpicklingError, match=rf"refused global '.*{name}'"):
        safe_pickle.loads(data)


def test_eval_in_nested_container_refused():
    data = b"\x80\x02]q\x00(K\x01cbuiltins\neval\nq\x01X\x03\x00\x00\x001+1q\x02\x85q\x03Rq\x04e."
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        safe_pickle.loads(data)


def test_object_arrays_refused():
    a = np.array([1, "x", None], dtype=object)
    with pytest.raises(pickle.UnpicklingError, match="object"):
        safe_pickle.loads(pickle.dumps(a, protocol=2))


def test_codecs_encode_only_latin1():
    # protocol 2 stores bytes as _codecs.encode(str, 'latin1'); other codecs are refused
    data = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x06\x00\x00\x00rot_13\x86R."
    with pytest.raises(pickle.UnpicklingError, match="_codecs.encode"):
        safe_pickle.loads(data)


def test_missing_file_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pck"):
        safe_pickle.load(tmp_path / "nope.pck")


def test_file_object_accepted():
    buf = io.BytesIO(pickle.dumps(np.ones(3, np.float32)))
    np.testing.assert_array_equal(safe_pickle.load(buf), np.ones(3, np.float32))
