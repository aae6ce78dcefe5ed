"""End-to-end tests of `xattn run` and `xattn info`: results against a float64 softmax oracle,
exit codes and messages for bad input, and output files left alone when a run fails."""

import pathlib

import numpy as np
import pytest

from cli_checks import assert_usage_error

RNG = np.random.default_rng(1234)


def reference(q, k, v, *, scale=None, causal=False, kv_lens=None, mask=None):
    """softmax(scale·q·kᵀ + mask)·v in float64 for 4-D [B, H, L, D] inputs (Hq = Hkv).
    Returns (out, lse, weights); a row that sees no key gives 0, -inf, 0."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, h, lq, d = q.shape
    lk = k.shape[2]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    s = scale * np.einsum("bhid,bhjd->bhij", q, k)
    visible = np.ones(s.shape, bool)
    i = np.arange(lq)[:, None]
    j = np.arange(lk)[None, :]
    if causal:
        visible &= j <= i
    if kv_lens is not None:
        visible &= (np.arange(lk)[None, :] < np.asarray(kv_lens)[:, None])[:, None, None, :]
    if mask is not None:
        visible &= np.broadcast_to(mask, s.shape)
    s = np.where(visible, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    any_visible = np.isfinite(m)
    p = np.where(visible, np.exp(s - np.where(any_visible, m, 0)), 0.0)
    l = p.sum(axis=-1, keepdims=True)
    w = np.where(any_visible, p / np.where(l > 0, l, 1), 0.0)
    out = w @ v
    lse = np.where(any_visible, m + np.log(np.where(l > 0, l, 1)), -np.inf)[..., 0]
    return out, lse, w


def inputs(b=2, h=3, lq=5, lk=7, d=16, dv=8, dtype=np.float32):
    q = RNG.standard_normal((b, h, lq, d)).astype(dtype)
    k = RNG.standard_normal((b, h, lk, d)).astype(dtype)
    v = RNG.standard_normal((b, h, lk, dv)).astype(dtype)
    return q, k, v


def assert_close_f32(got, want, v):
    assert got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(v).max())


def file_args(save, q, k, v):
    return ["--q", save("Q", q), "--k", save("K", k), "--v", save("V", v)]


# --- results ---------------------------------------------------------------------------------

def test_plain_f32(run, save, tmp_path):
    q, k, v = inputs()
    out = tmp_path / "out.npy"
    run("run", *file_args(save, q, k, v), "-o", out, check_rc=0)
    assert_close_f32(np.load(out), reference(q, k, v)[0], v)


def test_scale_lse_and_weights(run, save, tmp_path):
    q, k, v = inputs()
    out, lse, w = tmp_path / "out.npy", tmp_path / "lse.npy", tmp_path / "w.npy"
    run("run", *file_args(save, q, k, v), "--scale", "0.3", "-o", out, "--lse", lse,
        "--weights", w, check_rc=0)
    ref_out, ref_lse, ref_w = reference(q, k, v, scale=0.3)
    assert_close_f32(np.load(out), ref_out, v)
    got_lse = np.load(lse)
    assert got_lse.dtype == np.float32 and got_lse.shape == (2, 3, 5)
    np.testing.assert_allclose(got_lse, ref_lse, rtol=1e-5, atol=1e-5)
    got_w = np.load(w)
    assert got_w.dtype == np.float32 and got_w.shape == (2, 3, 5, 7)
    np.testing.assert_allclose(got_w, ref_w, rtol=0, atol=1e-5)


def test_causal(run, save, tmp_path):
    q, k, v = inputs(lq=6, lk=6)
    out, w = tmp_path / "out.npy", tmp_path / "w.npy"
    run("run", *file_args(save, q, k, v), "--causal", "-o", out, "--weights", w, check_rc=0)
    ref_out, _, ref_w = reference(q, k, v, causal=True)
    assert_close_f32(np.load(out), ref_out, v)
    np.testing.assert_array_equal(np.triu(np.load(w)[0, 0], 1), 0)


def test_kv_lens(run, save, tmp_path):
    q, k, v = inputs(b=3)
    out, lse = tmp_path / "out.npy", tmp_path / "lse.npy"
    run("run", *file_args(save, q, k, v), "--kv-lens", "5,7,2", "-o", out, "--lse", lse,
        check_rc=0)
    ref_out, ref_lse, _ = reference(q, k, v, kv_lens=[5, 7, 2])
    assert_close_f32(np.load(out), ref_out, v)
    np.testing.assert_allclose(np.load(lse), ref_lse, rtol=1e-5, atol=1e-5)


def test_bool_mask_with_empty_row(run, save, tmp_path):
    q, k, v = inputs()
    mask = RNG.random((5, 7)) < 0.6
    mask[2, :] = False  # a row that sees nothing: output 0, lse -inf
    out, lse = tmp_path / "out.npy", tmp_path / "lse.npy"
    run("run", *file_args(save, q, k, v), "--mask", save("M", mask), "-o", out, "--lse", lse,
        check_rc=0)
    ref_out, ref_lse, _ = reference(q, k, v, mask=mask)
    got = np.load(out)
    assert_close_f32(got, ref_out, v)
    assert np.all(got[:, :, 2] == 0)
    got_lse = np.load(lse)
    assert np.all(np.isneginf(got_lse[:, :, 2]))
    np.testing.assert_allclose(got_lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_three_d_inputs_and_mask(run, save, tmp_path):
    q, k, v = inputs(h=1)
    q3, k3, v3 = q[:, 0], k[:, 0], v[:, 0]
    mask = RNG.random((2, 5, 7)) < 0.7
    mask[:, :, 0] = True
    out, lse, w = tmp_path / "out.npy", tmp_path / "lse.npy", tmp_path / "w.npy"
    run("run", *file_args(save, q3, k3, v3), "--mask", save("M", mask), "-o", out, "--lse", lse,
        "--weights", w, check_rc=0)
    ref_out, ref_lse, ref_w = reference(q, k, v, mask=mask[:, None])
    assert_close_f32(np.load(out), ref_out[:, 0], v)
    assert np.load(lse).shape == (2, 5)
    assert np.load(w).shape == (2, 5, 7)
    np.testing.assert_allclose(np.load(w), ref_w[:, 0], rtol=0, atol=1e-5)


def test_fortran_order_input(run, save, tmp_path):
    q, k, v = inputs()
    out = tmp_path / "out.npy"
    run("run", "--q", save("Q", np.asfortranarray(q)), "--k", save("K", k), "--v",
        save("V", np.asfortranarray(v)), "-o", out, check_rc=0)
    assert_close_f32(np.load(out), reference(q, k, v)[0], v)


def test_f16_inputs_give_f16_output(run, save, tmp_path):
    q, k, v = inputs(dtype=np.float16)
    out, w = tmp_path / "out.npy", tmp_path / "w.npy"
    run("run", *file_args(save, q, k, v), "-o", out, "--weights", w, check_rc=0)
    got = np.load(out)
    assert got.dtype == np.float16 and got.shape == (2, 3, 5, 8)
    ref_out, _, ref_w = reference(q, k, v)
    np.testing.assert_allclose(got.astype(np.float64), ref_out, rtol=0,
                               atol=2e-3 * np.abs(v.astype(np.float64)).max())
    assert np.load(w).dtype == np.float16
    np.testing.assert_allclose(np.load(w).astype(np.float64), ref_w, rtol=0, atol=2e-3)


def test_threads_option(run, save, tmp_path):
    q, k, v = inputs(lq=33, lk=70)
    args = file_args(save, q, k, v)
    for n in (1, 4):
        out = tmp_path / f"out{n}.npy"
        run("run", *args, "--threads", n, "-o", out, check_rc=0)
        assert_close_f32(np.load(out), reference(q, k, v)[0], v)


@pytest.mark.parametrize("b,lk", [(0, 7), (2, 0)])
def test_empty_batch_or_no_keys(run, save, tmp_path, b, lk):
    """Zero counts are empty problems, as in the library: empty files, or with no keys out = 0
    and lse = -inf."""
    q, k, v = inputs(b=b, lk=lk)
    out, lse, w = tmp_path / "out.npy", tmp_path / "lse.npy", tmp_path / "w.npy"
    run("run", *file_args(save, q, k, v), "-o", out, "--lse", lse, "--weights", w, check_rc=0)
    assert np.load(out).shape == (b, 3, 5, 8) and np.load(w).shape == (b, 3, 5, lk)
    assert (np.load(out) == 0).all() and (np.load(lse) == -np.inf).all()


def test_output_replaces_existing_file(run, save, tmp_path):
    q, k, v = inputs()
    out = tmp_path / "out.npy"
    out.write_text("old")
    run("run", *file_args(save, q, k, v), "-o", out, check_rc=0)
    assert_close_f32(np.load(out), reference(q, k, v)[0], v)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["K.npy", "Q.npy", "V.npy", "out.npy"]


# --- bad input: exit 2, one line naming the argument, outputs untouched ------------------------

@pytest.fixture
def guarded_outputs(tmp_path):
    """An -o path that does not exist and an --lse path holding a sentinel; both must survive."""
    out, lse = tmp_path / "out.npy", tmp_path / "lse.npy"
    lse.write_bytes(b"sentinel")
    yield ["-o", out, "--lse", lse]
    assert not out.exists(), "-o file was created by a failed run"
    assert lse.read_bytes() == b"sentinel", "pre-existing --lse file was changed"
    leftovers = [p.name for p in tmp_path.iterdir() if ".part" in p.name or ".tmp" in p.name]
    assert not leftovers, leftovers


@pytest.fixture
def good_files(save):
    q, k, v = inputs()
    return {"q": save("Q", q), "k": save("K", k), "v": save("V", v)}


def test_missing_input_file(run, good_files, tmp_path, guarded_outputs):
    proc = run("run", "--q", tmp_path / "nope.npy", "--k", good_files["k"], "--v", good_files["v"],
               *guarded_outputs)
    assert_usage_error(proc, "--q", "nope.npy", "cannot open")


def test_truncated_input_file(run, good_files, tmp_path, guarded_outputs):
    data = good_files["k"].read_bytes()
    bad = tmp_path / "K_trunc.npy"
    bad.write_bytes(data[:-10])
    proc = run("run", "--q", good_files["q"], "--k", bad, "--v", good_files["v"], *guarded_outputs)
    assert_usage_error(proc, "--k", "K_trunc.npy", "truncated")


def test_unsupported_dtype(run, good_files, save, guarded_outputs):
    v64 = save("V64", np.zeros((2, 3, 7, 8)))
    proc = run("run", "--q", good_files["q"], "--k", good_files["k"], "--v", v64, *guarded_outputs)
    assert_usage_error(proc, "--v", "unsupported dtype '<f8'")


def test_mismatched_head_dim(run, good_files, save, guarded_outputs):
    k_bad = save("Kbad", np.zeros((2, 3, 7, 12), np.float32))
    proc = run("run", "--q", good_files["q"], "--k", k_bad, "--v", good_files["v"],
               *guarded_outputs)
    assert_usage_error(proc, "--k", "16", "12")


def test_mismatched_ranks(run, good_files, save, guarded_outputs):
    k3 = save("K3", np.zeros((2, 7, 16), np.float32))
    proc = run("run", "--q", good_files["q"], "--k", k3, "--v", good_files["v"], *guarded_outputs)
    assert_usage_error(proc, "--k", "rank")


def test_mask_that_does_not_broadcast(run, good_files, save, guarded_outputs):
    mask = save("M", np.ones((4, 7), bool))
    proc = run("run", *sum(([f"--{n}", p] for n, p in good_files.items()), []), "--mask", mask,
               *guarded_outputs)
    assert_usage_error(proc, "--mask")


@pytest.mark.parametrize("value", ["middle", "", "TOP_LEFT"])
def test_bad_align(run, good_files, guarded_outputs, value):
    proc = run("run", *sum(([f"--{n}", p] for n, p in good_files.items()), []), "--causal",
               "--align", value, *guarded_outputs)
    assert_usage_error(proc, "--align", value)


@pytest.mark.parametrize("value", ["3", "a,b", "-2,0", "1,2,3", "1;2"])
def test_bad_window(run, good_files, guarded_outputs, value):
    proc = run("run", *sum(([f"--{n}", p] for n, p in good_files.items()), []),
               f"--window={value}", *guarded_outputs)
    assert_usage_error(proc, "--window")


@pytest.mark.parametrize("option,value", [("--kv-lens", "3,x"), ("--kv-lens", "3"),
                                          ("--kv-lens", "9,9"), ("--scale", "abc"),
                                          ("--scale", "nan"), ("--threads", "-1"),
                                          ("--threads", "lots"), ("--threads", "5000")])
def test_bad_values(run, good_files, guarded_outputs, option, value):
    proc = run("run", *sum(([f"--{n}", p] for n, p in good_files.items()), []),
               f"{option}={value}", *guarded_outputs)
    assert_usage_error(proc, option)


def test_missing_required_inputs(run, good_files, guarded_outputs):
    proc = run("run", "--q", good_files["q"], "--k", good_files["k"], *guarded_outputs)
    assert_usage_error(proc, "--v")


def test_missing_output_option(run, good_files):
    proc = run("run", *sum(([f"--{n}", p] for n, p in good_files.items()), []))
    assert_usage_error(proc, "-o")


def test_unwritable_output_changes_nothing(run, good_files, tmp_path):
    lse = tmp_path / "lse.npy"
    lse.write_bytes(b"sentinel")
    out = tmp_path / "no" / "such" / "dir" / "out.npy"
    proc = run("run", *sum(([f"--{n}", p] for n, p in good_files.items()), []), "--lse", lse,
               "-o", out)
    assert_usage_error(proc, "-o", "cannot write")
    assert lse.read_bytes() == b"sentinel"
    assert not any(".part" in p.name for p in tmp_path.iterdir())


def test_same_path_for_two_outputs(run, good_files, tmp_path):
    out = tmp_path / "out.npy"
    proc = run("run", *sum(([f"--{n}", p] for n, p in good_files.items()), []), "-o", out,
               "--weights", out)
    assert_usage_error(proc, "--weights")
    assert not out.exists()


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["run", "--no-such-option"],
                                  ["run", "--q"], ["info", "extra"]])
def test_usage_errors(run, args):
    assert_usage_error(run(*args))


@pytest.mark.parametrize("junk", [b"", b"\x93NUMPY", b"\x93NUMPY\x01\x00\xff\xff{",
                                  b"\x93NUMPY\x03\x00\x10\x00\x00\x00{'descr': '<f4'}",
                                  bytes(range(256)) * 4])
def test_junk_files_never_crash(run, good_files, tmp_path, junk):
    bad = tmp_path / "junk.npy"
    bad.write_bytes(junk)
    out = tmp_path / "out.npy"
    proc = run("run", "--q", bad, "--k", good_files["k"], "--v", good_files["v"], "-o", out)
    assert_usage_error(proc, "--q", "junk.npy")
    assert not out.exists()


# --- the built-in example and info ---------------------------------------------------------------

def test_example_prints_heatmap(run):
    proc = run("run", check_rc=0)
    assert proc.stderr == ""
    text = proc.stdout
    for token in ["the", "cat", "drinks", "warm", "milk", "le", "chat", "boit", "lait", "chaud"]:
        assert token in text
    assert "attention map" in text
    assert any(block in text for block in "▓█")
    assert "0." in text


def test_example_attends_to_translations(run, tmp_path):
    w, out = tmp_path / "w.npy", tmp_path / "out.npy"
    run("run", "--weights", w, "-o", out, check_rc=0)
    weights = np.load(w)
    assert weights.shape == (1, 1, 5, 7)
    np.testing.assert_allclose(weights.sum(-1), 1, atol=1e-5)
    # the->le, cat->chat, drinks->boit, warm->chaud, milk->lait
    assert list(weights[0, 0].argmax(-1)) == [0, 1, 2, 5, 4]
    assert weights[0, 0].max(-1).min() > 0.5
    assert np.load(out).shape == (1, 1, 5, 8)


def test_example_honours_causal(run, tmp_path):
    w = tmp_path / "w.npy"
    proc = run("run", "--causal", "--weights", w, check_rc=0)
    assert "causal" in proc.stdout
    np.testing.assert_array_equal(np.triu(np.load(w)[0, 0], 1), 0)


def test_example_bad_option_is_still_an_error(run):
    assert_usage_error(run("run", "--window", "x"), "--window")


def test_info(run):
    proc = run("info", check_rc=0)
    text = proc.stdout
    assert text.startswith("xattn ")
    assert "simd target:" in text and "available targets:" in text
    assert "bf16 dot products: yes" in text or "bf16 dot products: no" in text
    threads = [line for line in text.splitlines() if line.startswith("threads:")]
    assert threads and int(threads[0].split(":")[1]) >= 1
    kernels = [line for line in text.splitlines() if line.startswith("OpenBLAS kernels: ")]
    assert kernels and kernels[0].split(": ")[1].strip()


def test_info_names_the_blas_kernels_chosen(run, monkeypatch):
    """OPENBLAS_CORETYPE (read when the process starts) decides them; info shows which."""
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert "OpenBLAS kernels: Haswell\n" in run("info", check_rc=0).stdout


def test_help_and_version(run):
    assert "run" in run("--help", check_rc=0).stdout
    assert "--kv-lens" in run("run", "--help", check_rc=0).stdout
    assert run("--version", check_rc=0).stdout.strip()


def sysfs_cache_bytes(level):
    """cpu0's cache at `level` as Linux's sysfs gives it ("32768K"), or None."""
    for index in sorted(pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        if (index / "level").read_text().strip() == str(level):
            size = (index / "size").read_text().strip()
            return int(size[:-1]) * {"K": 1 << 10, "M": 1 << 20}[size[-1]]
    return None


@pytest.mark.skipif(sysfs_cache_bytes(3) is None, reason="no sysfs cache description")
def test_info_reports_the_caches_a_core_uses(run):
    """The tile rules use the caches sysfs describes for a core (glibc's sysconf gives an AMD
    EPYC's L3 as that of all its CCDs, 8 times what a Zen 3 core shares)."""
    text = run("info", check_rc=0).stdout
    assert f"L2 cache of {sysfs_cache_bytes(2) >> 10} KiB" in text
    assert f"last-level cache of {sysfs_cache_bytes(3) >> 20} MiB" in text
