import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.fusion import fuse, linear_fusion, reciprocal_rank_fusion
from pipeline.readers import read_run


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_reciprocal_rank_fusion_hand_computed():
    a = {"1": {"x": 9.0, "y": 5.0}}
    b = {"1": {"y": 3.0, "z": 2.0}}
    fused = reciprocal_rank_fusion([a, b], k=60)["1"]
    assert fused == pytest.approx({"x": 1 / 61, "y": 1 / 62 + 1 / 61, "z": 1 / 62})


def test_linear_fusion_min_max_normalises_each_run():
    a = {"1": {"x": 10.0, "y": 0.0, "w": 5.0}}
    b = {"1": {"y": 4.0, "z": 2.0}}
    fused = linear_fusion([a, b], [0.3, 0.7])["1"]
    assert fused == pytest.approx({"x": 0.3, "w": 0.15, "y": 0.7, "z": 0.0})


def test_fuse_command_writes_a_trec_run(tmp_path, capsys):
    a = write(tmp_path / "bm25.txt", ["1 Q0 x 1 9 bm25", "1 Q0 y 2 5 bm25", "2 Q0 q 1 1 bm25"])
    b = write(tmp_path / "splade.txt", ["1 Q0 y 1 300 s", "1 Q0 z 2 200 s"])
    out = tmp_path / "fused.txt"
    assert main(["fuse", "--runs", str(a), str(b), "--output", str(out), "--hits", "2"]) == 0
    lines = out.read_text().splitlines()
    assert [l.split()[2] for l in lines if l.startswith("1 ")] == ["y", "x"]
    assert lines[-1].split()[:3] == ["2", "Q0", "q"] and lines[0].split()[5] == "fused-rrf"
    assert read_run(out)["1"]["y"] > read_run(out)["1"]["x"]
    with pytest.raises(PipelineError, match="2 weights for 3 runs"):
        fuse([a, b, a], "linear", weights=[0.5, 0.5])
    with pytest.raises(PipelineError, match="at least two"):
        fuse([a])


@pytest.mark.parametrize("options, message", [
    ({"k": 0}, "--k must be a positive finite number"),
    ({"k": float("nan")}, "--k must be a positive finite number"),
    ({"hits": 0}, "--hits must be an integer of at least 1"),
    ({"method": "linear", "weights": [1.0, float("inf")]}, "--weights must be finite"),
    ({"method": "linear", "weights": [0.0, 0.0]}, "not all zero"),
    ({"method": "rrf", "weights": [0.5, 0.5]}, "--weights applies to --method linear only"),
])
def test_fusion_options_are_validated_before_reading(tmp_path, options, message):
    with pytest.raises(PipelineError, match=message):
        fuse([tmp_path / "absent-a.txt", tmp_path / "absent-b.txt"], **options)


def test_fused_output_is_ours_and_reused_only_for_the_same_inputs(tmp_path, capsys):
    a = write(tmp_path / "a.txt", ["1 Q0 x 1 9 bm25", "1 Q0 y 2 5 bm25"])
    b = write(tmp_path / "b.txt", ["1 Q0 y 1 300 s", "1 Q0 z 2 200 s"])
    out = tmp_path / "fused.txt"
    assert main(["fuse", "--runs", str(a), str(b), "--output", str(out)]) == 0
    first = out.read_bytes()
    assert main(["fuse", "--runs", str(a), str(b), "--output", str(out), "--hits", "1"]) == 2
    assert "hits 1000 -> 1" in capsys.readouterr().err and out.read_bytes() == first
    assert main(["fuse", "--runs", str(a), str(b), "--output", str(out), "--hits", "1", "--overwrite"]) == 0
    assert out.read_bytes() != first
    assert main(["fuse", "--runs", str(a), str(b), "--output", str(a), "--overwrite"]) == 2
    assert "is one of the --runs" in capsys.readouterr().err
