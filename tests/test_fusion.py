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
