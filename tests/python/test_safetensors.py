"""load_safetensors / save_safetensors: round trips, agreement with an independent pure-Python
reader and writer of the format, errors naming the file, and the lifetime of zero-copy arrays."""

import gc
import json
import pathlib
import struct

import numpy as np
import pytest
import torch

import xattn

NUMPY_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.bool_): "BOOL"}
TORCH_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.bool: "BOOL"}
ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "BOOL": 1, "F64": 8}


# --- an independent implementation of the format, from its specification ---------------------------

def py_read(path):
    """(header keys in file order, {name: (dtype, shape, bytes)}, metadata) of a .safetensors file."""
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n:]
    tensors = {}
    for name, rec in header.items():
        begin, end = rec["data_offsets"]
        assert 0 <= begin <= end <= len(data)
        tensors[name] = (rec["dtype"], rec["shape"], data[begin:end])
    return list(header), tensors, metadata, n


def py_write(path, tensors, metadata=None):
    """Writes [(name, dtype, shape, bytes)] in the given order, json.dumps spacing and all."""
    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors))


def torch_bytes(t):
    """The row-major little-endian bytes of a CPU tensor, bfloat16 included."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def numpy_sources():
    base = (np.arange(24, dtype=np.float32) - 7.5).reshape(2, 3, 4)
    return {
        "f32": base,
        "f32_transposed": base.transpose(2, 0, 1),
        "f32_reversed": base[::-1, :, ::-2],
        "f32_broadcast": np.broadcast_to(base[0, 0], (3, 4)),
        "f32_scalar": np.array(2.5, dtype=np.float32),
        "f32_empty": np.zeros((0, 5), dtype=np.float32),
        "f16": base.astype(np.float16)[:, ::2],
        "mask": (np.arange(12).reshape(3, 4) % 3 == 0).T,
    }


# --- round trips ---------------------------------------------------------------------------------------

def test_numpy_round_trip(tmp_path):
    src = numpy_sources()
    path = tmp_path / "np.safetensors"
    xattn.save_safetensors(path, src)
    out = xattn.load_safetensors(path)
    assert set(out) == set(src)
    for name, a in src.items():
        b = out[name]
        assert b.dtype == a.dtype, name
        assert b.shape == a.shape, name
        np.testing.assert_array_equal(b, a, err_msg=name)
        assert b.flags.c_contiguous, name


def test_torch_round_trip(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) - 7.5
    src = {
        "f32": base.transpose(0, 2),
        "f16": base.half()[:, 1:],
        "bf16": (base * 1e20).bfloat16(),
        "bf16_strided": base.bfloat16()[:, :, ::3],
        "bool": base > 0,
        "scalar": torch.tensor(1.25, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 3, dtype=torch.float16),
    }
    path = tmp_path / "pt.safetensors"
    xattn.save_safetensors(str(path), src)
    out = xattn.load_safetensors(path, framework="torch")
    assert set(out) == set(src)
    for name, a in src.items():
        b = out[name]
        assert isinstance(b, torch.Tensor), name
        assert b.dtype == a.dtype, name
        assert b.shape == a.shape, name
        assert torch.equal(b, a), name
    # Copies: writing into them is allowed and leaves the file alone.
    out["f32"].fill_(0)
    assert torch.equal(xattn.load_safetensors(path, framework="torch")["f32"], src["f32"])


def test_bfloat16_reads_as_float32_in_numpy(tmp_path):
    t = torch.tensor([[1.5, -2.0e30], [3.0e-30, float("inf")]], dtype=torch.bfloat16)
    xattn.save_safetensors(tmp_path / "b.safetensors", {"t": t})
    out = xattn.load_safetensors(tmp_path / "b.safetensors")["t"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, t.float().numpy())


def test_metadata_round_trip(tmp_path):
    meta = {"format": "pt", "note": "ünïcode, \"quotes\" and\nnewlines"}
    path = tmp_path / "m.safetensors"
    xattn.save_safetensors(path, {"x": np.ones(2, np.float32)}, metadata=meta)
    tensors, got = xattn.load_safetensors(path, with_metadata=True)
    assert got == meta
    assert list(tensors) == ["x"]
    _, _, got, _ = py_read(path)
    assert got == meta
    _, got = xattn.load_safetensors(tmp_path / "m.safetensors", framework="torch", with_metadata=True)
    assert got == meta


def test_empty_dict(tmp_path):
    xattn.save_safetensors(tmp_path / "e.safetensors", {})
    assert xattn.load_safetensors(tmp_path / "e.safetensors") == {}
    assert (tmp_path / "e.safetensors").read_bytes() == struct.pack("<Q", 8) + b"{}      "


# --- agreement with the independent implementation ------------------------------------------------------

def test_written_files_parse_with_a_pure_python_reader(tmp_path):
    src = {
        "mask": torch.tensor([True, False, True]),
        "half": torch.arange(6, dtype=torch.float16).reshape(2, 3).t(),
        "weight": torch.arange(8, dtype=torch.float32).reshape(2, 4),
        "brain": torch.tensor([1.0, -3.0], dtype=torch.bfloat16),
        "np16": np.array([0.5, 2.0], dtype=np.float16),
    }
    path = tmp_path / "w.safetensors"
    xattn.save_safetensors(path, src, {"k": "v"})
    order, tensors, metadata, header_len = py_read(path)
    assert header_len % 8 == 0
    assert metadata == {"k": "v"}
    # Descending element size, the given order within a size; the header lists them that way.
    assert order == ["weight", "half", "brain", "np16", "mask"]
    raw = json.loads(path.read_bytes()[8:8 + header_len])
    begins = [raw[name]["data_offsets"][0] for name in order]
    assert begins == sorted(begins)
    for name, x in src.items():
        dtype, shape, blob = tensors[name]
        if isinstance(x, np.ndarray):
            assert dtype == NUMPY_DTYPES[x.dtype]
            want = np.ascontiguousarray(x).tobytes()
        else:
            assert dtype == TORCH_DTYPES[x.dtype]
            want = torch_bytes(x)
        assert shape == list(x.shape), name
        assert blob == want, name
        assert raw[name]["data_offsets"][0] % ITEMSIZE[dtype] == 0, name


def test_reads_files_from_a_pure_python_writer(tmp_path):
    f32 = np.arange(6, dtype=np.float32).reshape(3, 2)
    f16 = np.array([1.5, -0.25], dtype=np.float16)
    bf16 = torch.tensor([[2.0, -8.5]], dtype=torch.bfloat16)
    mask = np.array([[True], [False]])
    path = tmp_path / "py.safetensors"
    py_write(path, [
        ("a.weight", "F32", f32.shape, f32.tobytes()),
        ("b", "F16", f16.shape, f16.tobytes()),
        ("c", "BF16", bf16.shape, torch_bytes(bf16)),
        ("d", "BOOL", mask.shape, mask.tobytes()),
        ("e", "F32", (0, 4), b""),
    ], metadata={"source": "py_write"})

    out, meta = xattn.load_safetensors(path, with_metadata=True)
    assert meta == {"source": "py_write"}
    assert list(out) == ["a.weight", "b", "c", "d", "e"]
    np.testing.assert_array_equal(out["a.weight"], f32)
    np.testing.assert_array_equal(out["b"], f16)
    np.testing.assert_array_equal(out["c"], bf16.float().numpy())
    np.testing.assert_array_equal(out["d"], mask)
    assert out["e"].shape == (0, 4)

    pt = xattn.load_safetensors(path, framework="torch")
    assert torch.equal(pt["c"], bf16)
    assert torch.equal(pt["a.weight"], torch.from_numpy(f32))
    assert pt["d"].dtype == torch.bool


# --- zero-copy arrays ---------------------------------------------------------------------------------------

def test_numpy_arrays_are_read_only_views_that_keep_the_file_mapped(tmp_path):
    path = tmp_path / "v.safetensors"
    a = np.arange(1000, dtype=np.float32)
    xattn.save_safetensors(path, {"a": a, "b": np.ones(3, np.float16), "c": np.zeros(5, bool)})
    out = xattn.load_safetensors(path)
    kept = out["a"]
    assert not kept.flags.writeable
    assert not kept.flags.owndata  # a view of the mapping, not a copy
    with pytest.raises(ValueError):
        kept[0] = 1.0
    del out
    gc.collect()
    np.testing.assert_array_equal(kept, a)
    # Replacing the file does not disturb a live mapping of the old one.
    xattn.save_safetensors(path, {"a": np.zeros(1000, np.float32)})
    gc.collect()
    np.testing.assert_array_equal(kept, a)


# --- errors ------------------------------------------------------------------------------------------------

def test_missing_file_names_it(tmp_path):
    path = tmp_path / "missing.safetensors"
    with pytest.raises(xattn.Error, match="missing.safetensors: cannot open"):
        xattn.load_safetensors(path)
    assert issubclass(xattn.Error, ValueError)


@pytest.mark.parametrize("content,problem", [
    (b"", "fewer than the 8-byte header length"),
    (struct.pack("<Q", 64) + b"{}", "header length 64 exceeds"),
    (struct.pack("<Q", 8) + b"{\"a\":   ", "not valid JSON"),
    (struct.pack("<Q", 8) + b"[1, 2]  ", "must be a JSON object"),
    (struct.pack("<Q", 8) + b'{"w": 1}', "tensor 'w': expected an object"),
])
def test_malformed_files_raise_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(xattn.Error) as info:
        xattn.load_safetensors(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_inconsistent_offsets_raise(tmp_path):
    path = tmp_path / "off.safetensors"
    py_write(path, [("x", "F32", (3,), b"\0" * 8)])
    with pytest.raises(xattn.Error, match=r"tensor 'x': data_offsets \[0, 8\] hold 8 bytes, but dtype "
                                          r"F32 and shape \[3\] need 12"):
        xattn.load_safetensors(path)


def test_unsupported_dtype_raises(tmp_path):
    path = tmp_path / "f64.safetensors"
    py_write(path, [("d", "F64", (1,), b"\0" * 8)])
    with pytest.raises(xattn.Error, match="f64.safetensors: tensor 'd': dtype F64 is not supported"):
        xattn.load_safetensors(path)


@pytest.mark.parametrize("args,kwargs,arg", [
    ((3, {}), {}, "path"),
    ((b"x.safetensors", {}), {}, "path"),
    (("{dir}/x.safetensors", [np.ones(2, np.float32)]), {}, "tensors"),
    (("{dir}/x.safetensors", {1: np.ones(2, np.float32)}), {}, "tensors"),
    (("{dir}/x.safetensors", {"a": [1.0, 2.0]}), {}, "tensors['a']"),
    (("{dir}/x.safetensors", {"a": np.ones(2)}), {}, "tensors['a']"),  # float64
    (("{dir}/x.safetensors", {"a": torch.ones(2, dtype=torch.int32)}), {}, "tensors['a']"),
    (("{dir}/x.safetensors", {"a": np.ones(2, np.float32)}), {"metadata": ["k"]}, "metadata"),
    (("{dir}/x.safetensors", {"a": np.ones(2, np.float32)}), {"metadata": {"k": 1}}, "metadata"),
])
def test_save_type_errors_name_the_argument(tmp_path, args, kwargs, arg):
    args = tuple(a.format(dir=tmp_path) if isinstance(a, str) else a for a in args)
    with pytest.raises(TypeError, match=r"^" + arg.replace("[", r"\[").replace("]", r"\]") + ":"):
        xattn.save_safetensors(*args, **kwargs)
    assert not (tmp_path / "x.safetensors").exists()


def test_load_type_and_value_errors(tmp_path):
    path = tmp_path / "x.safetensors"
    xattn.save_safetensors(path, {})
    with pytest.raises(TypeError, match="^path:"):
        xattn.load_safetensors(None)
    with pytest.raises(TypeError, match="^framework:"):
        xattn.load_safetensors(path, framework=np)
    with pytest.raises(ValueError, match="^framework: expected 'numpy' or 'torch', got 'jax'"):
        xattn.load_safetensors(path, framework="jax")


def test_rejected_save_leaves_existing_file_untouched(tmp_path):
    path = tmp_path / "keep.safetensors"
    path.write_bytes(b"old contents")
    with pytest.raises(xattn.Error, match=r"tensors\['r5'\]: rank 5"):
        xattn.save_safetensors(path, {"r5": np.zeros((1, 1, 1, 1, 1), np.float32)})
    with pytest.raises(xattn.Error, match="keep.safetensors: cannot write: tensor name '__metadata__'"):
        xattn.save_safetensors(path, {"__metadata__": np.zeros(1, np.float32)})
    (tmp_path / "dir.safetensors").mkdir()
    (tmp_path / "dir.safetensors" / "f").write_bytes(b"x")
    with pytest.raises(xattn.Error, match="dir.safetensors: cannot write"):
        xattn.save_safetensors(tmp_path / "dir.safetensors", {"a": np.zeros(1, np.float32)})
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.safetensors", "keep.safetensors"]
