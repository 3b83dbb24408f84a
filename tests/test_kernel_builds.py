"""The side-by-side timing of native kernel builds (`benchmarks.kernel_builds`)."""

import pytest

from benchmarks import kernel_builds
from seqjax.fast import native

needs_compiler = pytest.mark.skipif(native.compiler() is None, reason="no C++ compiler: nothing to build")


def test_a_build_spec_gives_its_compiler_flags_and_source(tmp_path):
    source = tmp_path / "kernels.cc"
    source.write_text("// a copy\n")
    build = kernel_builds.parse_build(f"avx2=g++ -mno-avx512f -O2 source={source}")
    assert build == kernel_builds.Build("avx2", "g++", ("-mno-avx512f", "-O2"), source.resolve())
    assert kernel_builds.parse_build("plain=clang++").source == native.SOURCE.resolve()


@pytest.mark.parametrize("spec, match", [
    ("g++", "--build must be NAME=COMPILER"),
    ("=g++", "--build must be NAME=COMPILER"),
    ("name=", "--build must be NAME=COMPILER"),
    ("name=source=x.cc", "--build must be NAME=COMPILER"),
    ("name=g++ source=a.cc source=b.cc", "at most one source=PATH"),
    ("name=g++ source=/no/such/file.cc", "source '/no/such/file.cc' is not a file"),
])
def test_a_bad_build_spec_is_refused_with_what_was_given(spec, match):
    with pytest.raises(ValueError, match=f"kernel_builds: .*{match}"):
        kernel_builds.parse_build(spec)


@pytest.mark.parametrize("shape", ["forward:lstm:2:3:4", "sideways:lstm:2:3:4:5", "forward:rnn:2:3:4:5",
                                   "forward:lstm:2:0:4:5", "forward:lstm:2:x:4:5", "forward:lstm:2:3:4:5:fast",
                                   "forward:gru:2:3:4:5:strassen", "forward:lstm:2:3:4:5:plain:plain"])
def test_a_bad_shape_is_refused_with_what_was_given(shape):
    expected = rf"kernel_builds: a shape must be TASK:CELL:B:F:H:T\[:PRODUCT\].*got '{shape}'"
    with pytest.raises(ValueError, match=expected):
        kernel_builds.parse_shape(shape)


def test_a_shape_names_its_product_plain_unless_it_says_strassen():
    assert kernel_builds.parse_shape("forward:lstm:2:3:4:5") == ("forward", "lstm", 2, 3, 4, 5, "plain")
    assert kernel_builds.parse_shape("closed_loop:lstm:2:3:4:5:strassen")[-1] == "strassen"
    assert all(s.endswith(":strassen") for s in kernel_builds.DEFAULT_SHAPES if ":lstm:" in s)


def test_flops_count_the_recurrent_matmul_of_each_task():
    assert kernel_builds.flops("forward:lstm:3:5:7:11") == 2 * 11 * 3 * (5 + 7) * 4 * 7
    assert kernel_builds.flops("closed_loop:lstm:3:5:7:11") == 2 * 11 * 3 * 7 * 4 * 7  # folded: h rows only
    assert kernel_builds.flops("forward:gru:3:5:7:11") == 2 * 11 * 3 * (5 + 7) * 3 * 7


def test_options_are_checked_before_anything_is_built():
    with pytest.raises(ValueError, match="kernel_builds: build names must differ"):
        kernel_builds.main(["--build", "a=c++", "--build", "a=c++"])
    with pytest.raises(ValueError, match="kernel_builds: --rounds and --reps must be positive"):
        kernel_builds.main(["--rounds", "0"])


@needs_compiler
def test_builds_are_timed_and_only_a_changed_source_shows_in_the_outputs(tmp_path, capsys):
    text = native.SOURCE.read_text()
    sigmoid = "inline vf vsigmoid(vf x) { return vtanh(x * 0.5f) * 0.5f + 0.5f; }"
    assert sigmoid in text
    copy, changed = tmp_path / "copy" / "lstm_cpu.cc", tmp_path / "changed" / "lstm_cpu.cc"
    for path, source in ((copy, text), (changed, text.replace(sigmoid, sigmoid.replace("+ 0.5f;", "+ 0.25f;")))):
        path.parent.mkdir()
        path.write_text(source)
    shapes = ["forward:lstm:7:3:21:4", "closed_loop:gru:13:2:17:3"]
    cxx = native.compiler()
    result = kernel_builds.main(["--build", f"kernels={cxx}", "--build", f"copy={cxx} source={copy}",
                                 "--build", f"changed={cxx} source={changed}", "--shape", shapes[0], "--shape",
                                 shapes[1], "--rounds", "2", "--reps", "1", "--out", str(tmp_path / "out.json")])
    assert list(result["results"]) == shapes
    for shape in shapes:
        row = result["results"][shape]
        assert row["kernels"]["ratio"] == 1.0
        # a second build of the same source, in its own process: the same outputs, to the bit
        assert row["copy"]["checksum"] == row["kernels"]["checksum"] and not row["copy"]["outputs_differ"]
        assert row["changed"]["outputs_differ"]  # the sigmoid moved by 1/4: every output moves
        for name in ("copy", "changed"):
            assert len(row[name]["runs_ms"]) == 2 and row[name]["median_ms"] > 0
    assert (tmp_path / "out.json").exists()
    assert "| forward:lstm:7:3:21:4 |" in capsys.readouterr().out


@needs_compiler
def test_a_strassen_shape_runs_strassens_product(tmp_path):
    """One thread, B 32, H 64: two chunks of two pairs of 4-row blocks, so the kernel takes Strassen's product; its
    outputs differ from the plain product's in their roundings only."""
    shapes = [f"{task}:lstm:32:3:64:5{product}" for task in ("forward", "closed_loop") for product in ("", ":strassen")]
    args = ["--shape", shapes[0], "--shape", shapes[1], "--shape", shapes[2], "--shape", shapes[3]]
    result = kernel_builds.main([*args, "--threads", "1", "--rounds", "1", "--reps", "1"])["results"]
    for plain, strassen in (shapes[:2], shapes[2:]):
        a, b = result[plain]["default"]["checksum"], result[strassen]["default"]["checksum"]
        assert a != b and abs(a - b) <= 1e-4 * max(1.0, abs(a))
