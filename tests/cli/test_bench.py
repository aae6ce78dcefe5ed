"""End-to-end tests of `xattn bench`: one tiny smoke run whose JSON is checked field by field (the
only benchmark in the test suite: it takes well under a second), and bad options, which must be
refused before anything is measured and leave no JSON file behind."""

import json
import math
import re
import subprocess

import pytest

from cli_checks import assert_usage_error

SUITE = ["whisper-decode", "whisper-prefill", "sd-unet-xattn", "perceiver-encode", "self-2k-d64",
         "self-2k-d64-causal", "self-2k-d128", "self-2k-d128-causal", "gqa-decode", "crossvit-cls"]

# The shape the issue asks for (Lq = 8), plus a grouped-query decode step (Hq = 2·Hkv, Lq = 1)
# so that the GQA indexing and the bandwidth figures are checked by the same run.
SHAPES = [(1, 2, 2, 8, 16, 8), (1, 4, 2, 1, 32, 8)]
TINY = ["--shape", "1,2,2,8,16,8", "--runs", "1", "--min-time", "0", "--threads", "1"]


def tiny_except(args):
    """TINY without the options `args` set (each may be given once), so that a bad option still
    meets a tiny run, not the whole suite, should it ever be accepted."""
    given = {a.split("=")[0] for a in args if a.startswith("--")}
    pairs = zip(TINY[::2], TINY[1::2])
    return [x for option, value in pairs if option not in given for x in (option, value)]


@pytest.fixture(scope="module")
def smoke(xattn_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out.json"
    args = ["bench", *sum((["--shape", ",".join(map(str, s))] for s in SHAPES), []),
            "--runs", "1", "--min-time", "0", "--json", out, "--threads", "1"]
    proc = subprocess.run([str(xattn_bin), *map(str, args)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stderr == ""
    return proc.stdout, json.loads(out.read_text())


def positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_machine_limits(smoke):
    _, doc = smoke
    machine = doc["machine"]
    assert machine["simd_target"] and machine["blas"]
    [limits] = machine["limits"]
    assert limits["threads"] == 1
    for field in ["fma_gflops", "copy_gbps", "read_gbps"]:
        assert positive(limits[field]), (field, limits)
    # null only on CPUs without AVX-512 BF16.
    bf16 = limits["bf16_dot_gflops"]
    assert bf16 is None or positive(bf16)


def test_machine_limits_measured_again_after_the_cases(smoke):
    stdout, doc = smoke
    machine = doc["machine"]
    [before], [after] = machine["limits"], machine["limits_after"]
    assert after["threads"] == 1
    fields = ["fma_gflops", "copy_gbps", "read_gbps"]
    for field in fields:
        assert positive(after[field]), (field, after)
    assert (after["bf16_dot_gflops"] is None) == (before["bf16_dot_gflops"] is None)
    if before["bf16_dot_gflops"] is not None:
        fields.append("bf16_dot_gflops")
    change = max(abs(after[f] / before[f] - 1) for f in fields)
    assert machine["limits_change"] == pytest.approx(change)
    assert "measured again after the cases" in stdout
    # The warning appears exactly when some limit moved by more than 10%.
    assert ("they moved by" in stdout) == (change > 0.1)


def test_one_result_per_shape_and_dtype(smoke):
    stdout, doc = smoke
    got = [(r["B"], r["Hq"], r["Hkv"], r["Lq"], r["Lk"], r["D"], r["variant"]) for r in doc["results"]]
    assert got == [(*s, variant) for s in SHAPES for variant in ("f32", "bf16", "bf16p")]
    for r in doc["results"]:
        assert r["Dv"] == r["D"] and r["causal"] is False and r["threads"] == 1
        assert r["dtype"] == ("f32" if r["variant"] == "f32" else "bf16")
        assert r["bf16_probabilities"] == (r["variant"] == "bf16p")
        assert r["name"] in stdout


def test_timings_and_rates(smoke):
    _, doc = smoke
    limits = doc["machine"]["limits"][0]
    for r in doc["results"]:
        for field in ["xattn_ms", "xattn_ms_min", "xattn_ms_max", "gflops", "baseline_ms",
                      "baseline_ms_min", "baseline_ms_max", "speedup", "ref_max_abs", "v_max_abs"]:
            assert positive(r[field]), (field, r)
        assert r["calls"] >= 1 and r["baseline_calls"] >= 1
        assert r["xattn_ms_min"] <= r["xattn_ms"] <= r["xattn_ms_max"]
        seconds = r["xattn_ms"] * 1e-3
        flops = 4 * r["B"] * r["Hq"] * r["Lq"] * r["Lk"] * r["D"]
        assert r["gflops"] == pytest.approx(flops / seconds * 1e-9)
        assert r["speedup"] == pytest.approx(r["baseline_ms"] / r["xattn_ms"])
        # bf16 counts against the bf16 dot peak where it runs on dot products, else it is
        # widened to f32 and counts against the FMA peak.
        dots = r["dtype"] == "bf16" and doc["machine"]["bf16_dot_products"]
        peak = limits["bf16_dot_gflops"] if dots else limits["fma_gflops"]
        assert r["peak_fraction"] == pytest.approx(r["gflops"] / peak)
        # f32 ran first for each shape, so every bf16 row has its ratio.
        assert (r["over_f32"] is None) == (r["dtype"] == "f32")
        assert r["over_f32"] is None or positive(r["over_f32"])
        assert r["thread_speedup"] is None  # one thread count


def test_kv_bandwidth_only_for_decode(smoke):
    _, doc = smoke
    copy_gbps = doc["machine"]["limits"][0]["copy_gbps"]
    for r in doc["results"]:
        fields = [r["kv_gbps"], r["kv_copy_fraction"], r["kv_read_fraction"]]
        if r["Lq"] != 1:
            assert fields + [r["kv_beyond_llc"]] == [None] * 4
            continue
        assert all(positive(x) for x in fields), r
        size = 4 if r["dtype"] == "f32" else 2
        kv_bytes = r["B"] * r["Hkv"] * r["Lk"] * (r["D"] + r["Dv"]) * size
        assert r["kv_gbps"] == pytest.approx(kv_bytes / (r["xattn_ms"] * 1e-3) * 1e-9)
        assert r["kv_copy_fraction"] == pytest.approx(r["kv_gbps"] / copy_gbps)
        # Beyond the last-level cache `xattn info` names (in whole MiB, rounded down) or not.
        llc_mib = int(re.search(r"last-level cache of (\d+) MiB", doc["machine"]["tiles"])[1])
        if not llc_mib << 20 <= kv_bytes < (llc_mib + 1) << 20:
            assert r["kv_beyond_llc"] is (kv_bytes > llc_mib << 20), r


def test_xattn_agrees_with_baseline(smoke):
    _, doc = smoke
    for r in doc["results"]:
        if r["dtype"] == "f32":
            # Both accumulate in f32 over at most 16 keys of values below 2·sqrt(3).
            bound = 1e-5
        else:
            # Both start from the same bf16 inputs and accumulate in f32; xattn then rounds its
            # output to bf16 (to nearest: relative error at most 2^-8, and |out| <= max|V|
            # because out is a convex combination of V rows), the baseline keeps f32. So the
            # difference is the output rounding, 2^-8·|out| <= 2^-8·ref_max_abs (up to the f32
            # part, 1e-5 as above).
            bound = 2.0**-8 * r["ref_max_abs"] + 1e-5
            if r["bf16_probabilities"]:
                # Each weight rounded to bf16 moves out by at most 2^-9·max|V|
                # (AttentionParams::bf16_probabilities).
                bound += 2.0**-9 * r["v_max_abs"]
        assert 0 <= r["max_err"] <= bound, r


def test_table_has_header_and_rows(smoke):
    stdout, _ = smoke
    lines = stdout.splitlines()
    assert any("FMA" in line and "copy" in line for line in lines)
    head = next(i for i, line in enumerate(lines) if line.startswith("shape"))
    for column in ["xattn ms", "GFLOP/s", "%peak", "×f32", "base ms", "speed-up", "K/V GB/s",
                   "%copy", "max err"]:
        assert column in lines[head], column
    # One row per shape and dtype, then the limits measured again (a heading, the columns and
    # one thread count) and the warning when they moved.
    rows = lines[head + 1:head + 7]
    assert [row.split()[:2] for row in rows] == [
        [",".join(map(str, s)), v] for s in SHAPES for v in ("f32", "bf16", "bf16p")]
    assert lines[head + 7:head + 9] == ["", "machine limits, measured again after the cases:"]
    assert len(lines) - (head + 11) == ("they moved by" in stdout)


# --- bad options: exit 2, the option named, nothing measured, no JSON file -----------------------

@pytest.mark.parametrize("args,needles", [
    (["--shape", "1,2,x"], ["--shape", "B,Hq,Hkv,Lq,Lk,D", "'1,2,x'"]),
    (["--shape", "1,2,2,8,16"], ["--shape", "'1,2,2,8,16'"]),
    (["--shape", "1,2,2,8,16,8,1"], ["--shape"]),
    (["--shape", "1,2,2,0,16,8"], ["--shape", "positive"]),
    (["--shape", "1,2,-2,8,16,8"], ["--shape", "positive"]),
    (["--shape", "1,3,2,8,16,8"], ["--shape", "Hq = 3", "Hkv = 2"]),
    (["--shape", "1,2,2,8,99999999999,99999999999"], ["--shape", "too large"]),
    (["--shape", "gpt-5"], ["--shape", "gpt-5", *SUITE]),
    (["--shape="], ["--shape"]),
    (["--threads", "0"], ["--threads", "'0'"]),
    (["--threads", "1,0"], ["--threads", "'1,0'"]),
    (["--threads", "two"], ["--threads"]),
    (["--threads", "1,,2"], ["--threads"]),
    (["--runs", "0"], ["--runs"]),
    (["--runs", "-3"], ["--runs"]),
    (["--runs", "many"], ["--runs"]),
    (["--min-time", "-0.5"], ["--min-time", "-0.5"]),
    (["--min-time", "nan"], ["--min-time"]),
    (["--dtype", "f16"], ["--dtype", "f32, bf16, bf16p or all"]),
    (["--dtype="], ["--dtype"]),
    (["--bf16-dot", "yes"], ["--bf16-dot", "auto, on or off", "'yes'"]),
    (["--key-chunks", "2"], ["--key-chunks", "auto, on or off", "'2'"]),
    (["--kv-prefetch", "always"], ["--kv-prefetch", "auto, on or off", "'always'"]),
])
def test_bad_option(run, tmp_path, args, needles):
    out = tmp_path / "out.json"
    proc = run("bench", *tiny_except(args), "--json", out, *args)
    assert_usage_error(proc, *needles)
    assert list(tmp_path.iterdir()) == []


def test_causal_needs_a_square_custom_shape(run, tmp_path):
    out = tmp_path / "out.json"
    proc = run("bench", *tiny_except(["--shape"]), "--shape", "1,2,2,4,16,8", "--causal",
               "--json", out)
    assert_usage_error(proc, "--causal", "Lq = 4", "Lk = 16")
    assert list(tmp_path.iterdir()) == []


def test_causal_without_custom_shape(run, tmp_path):
    out = tmp_path / "out.json"
    proc = run("bench", "--shape", "self-2k-d64", "--causal", "--json", out)
    assert_usage_error(proc, "--causal", "self-2k-d64-causal")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["directory", "missing_dir", "empty"])
def test_unwritable_json(run, tmp_path, where):
    target = {"directory": tmp_path, "missing_dir": tmp_path / "no" / "such" / "out.json",
              "empty": ""}[where]
    proc = run("bench", *TINY, "--json", target)
    assert_usage_error(proc, "--json")
    assert list(tmp_path.iterdir()) == []


def test_existing_json_survives_bad_option(run, tmp_path):
    out = tmp_path / "out.json"
    out.write_text("sentinel")
    proc = run("bench", *TINY, "--json", out, "--runs", "0")
    assert_usage_error(proc, "--runs")
    assert out.read_text() == "sentinel"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_backward_mode(xattn_bin, tmp_path):
    out = tmp_path / "bwd.json"
    proc = subprocess.run([str(xattn_bin), "bench", "--backward", *TINY, "--dtype", "f32",
                           "--json", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "bwd/fwd" in proc.stdout
    [r] = json.loads(out.read_text())["results"]
    for field in ["backward_ms", "backward_ms_min", "backward_ms_max", "backward_gflops",
                  "backward_peak_fraction", "backward_over_forward"]:
        assert positive(r[field]), (field, r)
    assert r["backward_ms_min"] <= r["backward_ms"] <= r["backward_ms_max"]
    flops = 10 * r["B"] * r["Hq"] * r["Lq"] * r["Lk"] * r["D"]
    assert r["backward_gflops"] == pytest.approx(flops / (r["backward_ms"] * 1e-3) * 1e-9)
    assert r["backward_over_forward"] == pytest.approx(r["backward_ms"] / r["xattn_ms"])


def test_profile_mode(xattn_bin, tmp_path):
    """--profile: each pass's stages, as shares of the threads' time that are fractions and
    leave a non-negative rest."""
    out = tmp_path / "profile.json"
    proc = subprocess.run([str(xattn_bin), "bench", "--backward", "--profile", *TINY, "--dtype",
                           "f32", "--json", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "where the time goes" in proc.stdout
    [r] = json.loads(out.read_text())["results"]
    for key, stages in [("forward_profile", ["pack queries", "scores", "softmax", "weighted sum",
                                             "finish"]),
                        ("backward_profile", ["pack rows", "scores", "gradients", "dK dV", "dQ",
                                              "stores"])]:
        shares = r[key]
        assert list(shares) == stages + ["other"], shares
        assert all(0 <= shares[s] <= 1 for s in stages), shares
        assert shares["scores"] > 0, shares
        assert shares["other"] == pytest.approx(1 - sum(shares[s] for s in stages))
        assert shares["other"] >= -0.05, shares  # stages never overlap
    # The tile kernels alone, for the shape's head dimension: rates, and fractions of the
    # one-thread FMA peak of the same run.
    assert "the tile kernels alone" in proc.stdout
    doc = json.loads(out.read_text())
    [tile] = doc["tile_kernels"]
    assert (tile["head_dim"], tile["value_dim"], tile["keys"]) == (8, 8, 128), tile
    assert tile["rows"] % 8 == 0, tile
    [limits] = doc["machine"]["limits"]
    for name in ["scores", "weighted_sum", "tile"]:
        assert positive(tile[f"{name}_gflops"]), tile
        assert tile[f"{name}_peak_fraction"] == pytest.approx(
            tile[f"{name}_gflops"] / limits["fma_gflops"]), tile
    assert positive(tile["softmax_ns_per_vector"]), tile
    assert 0 < tile["softmax_tile_fraction"] < 1, tile


def test_tile_kernels_only_with_profile(smoke):
    stdout, doc = smoke
    assert doc["tile_kernels"] == []
    assert "the tile kernels alone" not in stdout


def test_bf16_dot_option_is_reported(xattn_bin, tmp_path):
    out = tmp_path / "bf16.json"
    proc = subprocess.run([str(xattn_bin), "bench", "--bf16-dot", "off", *TINY, "--dtype", "bf16",
                           "--json", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    machine = json.loads(out.read_text())["machine"]
    assert machine["bf16_dot_products"] is False
    assert machine["cpu"] and machine["tiles"]
    # "forced" where the CPU has the dot products; else the reason is that it has none.
    info = subprocess.run([str(xattn_bin), "info"], capture_output=True, text=True, timeout=60)
    missing = "the CPU or the SIMD target in use has no AVX-512 BF16"
    reason = missing if missing in info.stdout else "forced"
    assert f"bf16 dot products: no ({reason})" in proc.stdout
