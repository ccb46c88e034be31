"""What a collection records about how its vectors were computed, and what a resumed run must match:
the device kind (GPU vectors differ slightly from CPU ones), shard checksums, old manifests."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline import collection, devices, models, stages
from pipeline.collection import EncodeSettings
from pipeline.demo import DEMO_DATA
from pipeline.errors import ConsistencyError

QUIET = {"progress": False, "say": lambda text: None}


def corpus_of(tmp_path: Path, count: int = 9) -> Path:
    lines = [json.dumps({"_id": f"d{i}", "text": f"coral reef number {i} and the tides"}) for i in range(count)]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def settings(device: str) -> EncodeSettings:
    return EncodeSettings(models.resolve(None).describe(), "max", 100, 512, 32, 3, device)


def test_device_kind_is_recorded(tmp_path):
    manifest = stages.encode(corpus_of(tmp_path), tmp_path / "c", shard_size=3, threads=1, **QUIET)
    assert manifest["settings"]["device"] == "cpu"
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["settings"]["device"] == "cpu"


def test_a_collection_begun_on_a_gpu_is_not_resumed_on_the_cpu(tmp_path):
    """The plan of a run begun with --device cuda (written as that run writes it); resuming on the
    CPU names the collection and the setting, and encodes nothing."""
    corpus, folder = corpus_of(tmp_path), tmp_path / "c"
    collection.prepare(corpus, folder, settings("cuda"), overwrite=False, progress=False)
    with pytest.raises(ConsistencyError, match=rf"^{folder} was encoded with other settings \(device 'cuda' -> "
                                               r"'cpu'\); use --overwrite"):
        stages.encode(corpus, folder, shard_size=3, threads=1, **QUIET)
    assert not list(folder.glob("vectors/*.jsonl"))  # nothing encoded


def test_a_manifest_from_before_the_device_was_recorded_stays_usable(tmp_path):
    corpus, folder = corpus_of(tmp_path), tmp_path / "c"
    stages.encode(corpus, folder, shard_size=3, threads=1, **QUIET)
    for name in ("manifest.json", "plan.json"):
        record = json.loads((folder / name).read_text())
        del record["settings"]["device"]
        (folder / name).write_text(json.dumps(record))
    said = []
    stages.encode(corpus, folder, shard_size=3, threads=1, progress=False, say=said.append)
    assert "already encoded" in said[0]


def test_a_corrupted_shard_is_encoded_again_on_resume(tmp_path):
    """finished_shards checks each vectors file against its record's sha256."""
    corpus, folder = corpus_of(tmp_path), tmp_path / "c"
    stages.encode(corpus, folder, shard_size=3, threads=1, **QUIET)
    good = (folder / "vectors" / "part-00001.jsonl").read_bytes()
    plan = json.loads((folder / "plan.json").read_text())
    assert sorted(collection.finished_shards(folder, plan)) == [0, 1, 2]
    (folder / "manifest.json").unlink()  # as if killed before the manifest was written
    (folder / "vectors" / "part-00001.jsonl").write_bytes(good.replace(b'"coral"', b'"koral"', 1))
    assert sorted(collection.finished_shards(folder, plan)) == [0, 2]
    stages.encode(corpus, folder, shard_size=3, threads=1, **QUIET)
    assert (folder / "vectors" / "part-00001.jsonl").read_bytes() == good
    collection.verify_vectors(folder, collection.load_manifest(folder))


def test_cpu_thread_count_does_not_change_document_impacts():
    """Why the thread count is not in the settings: the document path gives the same impacts on one
    thread and on two (the demo corpus; 1,000 SciFact documents gave the same in the measurement
    behind this choice)."""
    from pipeline.encoder import SpladeEncoder
    from pipeline.readers import read_corpus

    import torch

    texts = [doc.text for _, doc in read_corpus(DEMO_DATA / "corpus.jsonl") if doc.text]
    found, before = [], torch.get_num_threads()
    try:
        for threads in (1, 2):
            encoder = SpladeEncoder(models.resolve(None), "max", 512, threads)
            found.append([encoder.to_terms(vector, 100) for vector in encoder.encode(texts)])
    finally:
        torch.set_num_threads(before)  # process-wide: leave it as the other tests found it
    assert len(found[0]) == 40 and found[0] == found[1]


@pytest.mark.parametrize("name, kind", [("cuda", "cuda"), ("cuda:1", "cuda"), ("CUDA:0", "cuda"), ("mps", "mps"),
                                        ("cpu", "cpu"), ("auto", "cpu"), (None, "cpu")])
def test_kind_of_a_workers_device(name, kind):
    assert devices.kind_of(name) == kind


def test_settings_record_every_field():
    assert asdict(settings("cuda"))["device"] == "cuda" and settings("cpu").key()["device"] == "cpu"
