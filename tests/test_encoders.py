"""Encoder specs: sentence-transformers SparseEncoder folders, separate and inference-free query sides.

The models are built here, offline, with sentence-transformers' own modules from splade-tiny; the
pipeline's float weights must equal ``SparseEncoder.encode_query`` / ``encode_document`` within
1e-5 and its quantised impacts must be identical.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline import encoders, models
from pipeline.errors import InputError, PipelineError
from pipeline.impacts import SparseVector, dense, quantise

QUERIES = ["What causes coral reefs to bleach?", "how do tides work", "solar panels on cloudy days",
           "Does vitamin D lower the risk of fractures in older adults?"]
DOCUMENTS = ["Coral reefs bleach when the ocean warms and the algae living in the coral leave.",
             "Tides are caused by the gravitational pull of the moon and, to a lesser degree, the sun.",
             "Solar panels still produce electricity on cloudy days, though less of it.",
             "A short one.",
             "Vitamin D supplements did not reduce fractures in a trial of 25,000 older adults; " * 6]


def _st_modules():
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Router, Transformer
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SparseStaticEmbedding, SpladePooling

    return SparseEncoder, Router, Transformer, MLMTransformer, SparseStaticEmbedding, SpladePooling


def _perturbed_checkpoint(folder) -> str:
    """splade-tiny with other weights (same vocabulary): a second checkpoint for the query side."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    location = models.resolve(None).location
    model = AutoModelForMaskedLM.from_pretrained(location)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.bert.encoder.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(location).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Symmetric (prompts, sum pooling, log1p_relu), Router (SparseStaticEmbedding) and a second checkpoint."""
    import torch

    SparseEncoder, Router, Transformer, MLMTransformer, SparseStaticEmbedding, SpladePooling = _st_modules()
    root = tmp_path_factory.mktemp("sparse-encoders")
    location = models.resolve(None).location
    found = {}
    symmetric = SparseEncoder(modules=[MLMTransformer(location, max_seq_length=48), SpladePooling("max")],
                              prompts={"query": "query: ", "document": ""})
    symmetric.save(str(root / "symmetric"))
    found["symmetric"] = (root / "symmetric", symmetric)
    summed = SparseEncoder(modules=[Transformer(location, transformer_task="fill-mask"), SpladePooling("sum")])
    summed.save(str(root / "sum"))
    found["sum"] = (root / "sum", summed)
    log_relu = SparseEncoder(modules=[MLMTransformer(location), SpladePooling("max", "log1p_relu")])
    log_relu.save(str(root / "log1p_relu"))
    found["log1p_relu"] = (root / "log1p_relu", log_relu)
    document = MLMTransformer(location)
    weight = torch.rand(document.tokenizer.vocab_size, generator=torch.Generator().manual_seed(3)) * 4
    weight[torch.rand(weight.shape, generator=torch.Generator().manual_seed(4)) < 0.1] = 0  # some tokens weigh 0
    static = SparseStaticEmbedding(tokenizer=document.tokenizer, weight=weight, frozen=True)
    router = SparseEncoder(modules=[Router.for_query_document(query_modules=[static],
                                                              document_modules=[document, SpladePooling("max")])])
    router.save(str(root / "router"))
    found["router"] = (root / "router", router)
    other = _perturbed_checkpoint(root / "other")
    found["other"] = (root / "other", SparseEncoder(modules=[MLMTransformer(other), SpladePooling("max")]))
    return found


def _st(model, texts: list[str], role: str) -> np.ndarray:
    encode = model.encode_query if role == "query" else model.encode_document
    return encode(texts, convert_to_tensor=True).to_dense().float().cpu().numpy()


def _quantised(dense: np.ndarray, scale: float = 100, rule: str = "scale") -> list[dict[int, int]]:
    found = []
    for row in dense:
        ids = np.flatnonzero(row)
        kept, values = quantise(SparseVector(ids, row[ids]), scale, rule)
        found.append(dict(zip(kept.tolist(), values.tolist())))
    return found


def _pipeline(side: encoders.QuerySide, texts: list[str], role: str) -> np.ndarray:
    if role == "document":
        encoder = encoders.load_documents(side, threads=1)
        return dense(encoder.encode(texts), encoder.vocab_size)
    queries = encoders.load_queries(encoders.QuerySpec(side, 100), threads=1)
    return dense(queries.vectors(texts), 30522)


def _check_equal(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert theirs.shape == ours.shape and np.count_nonzero(theirs) > 0
    # within 1e-5, relative above a weight of 1: sum pooling adds float32 terms in another order
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    assert _quantised(ours) == _quantised(theirs)
    assert _quantised(ours, rule="anserini") == _quantised(theirs, rule="anserini")


@pytest.mark.parametrize("name", ["symmetric", "sum", "log1p_relu"])
def test_symmetric_folder_matches_sentence_transformers(built, name):
    folder, model = built[name]
    found = encoders.resolve(str(folder))
    assert found.document.folder == str(folder.resolve())
    assert found.document.pooling == ("sum" if name == "sum" else "max")
    assert found.document.activation == ("log1p_relu" if name == "log1p_relu" else "relu")
    if name == "symmetric":  # its own configuration: 48 tokens, and a query prompt that documents lack
        assert found.document.max_length == 48 and found.query.prompt == "query: " and found.document.prompt == ""
    _check_equal(_pipeline(found.document, DOCUMENTS, "document"), _st(model, DOCUMENTS, "document"))
    _check_equal(_pipeline(found.query or found.document, QUERIES, "query"), _st(model, QUERIES, "query"))


def test_router_folder_queries_are_inference_free_and_match(built):
    folder, model = built["router"]
    found = encoders.resolve(str(folder))
    assert isinstance(found.query, encoders.StaticSide) and found.query.rule == "static"
    assert found.document.model.location.endswith("document_0_MLMTransformer")
    _check_equal(_pipeline(found.document, DOCUMENTS, "document"), _st(model, DOCUMENTS, "document"))
    _check_equal(_pipeline(found.query, QUERIES, "query"), _st(model, QUERIES, "query"))


def test_separate_query_and_document_checkpoints(built):
    """Documents through splade-tiny, queries through another checkpoint of the same vocabulary."""
    document = encoders.resolve(None).document
    other_folder, other = built["other"]
    side = encoders.query_side(str(other_folder), document)
    assert isinstance(side, encoders.ModelSide) and side.model.fingerprint != document.model.fingerprint
    assert (side.pooling, side.max_length) == (document.pooling, document.max_length)  # as the documents
    _check_equal(_pipeline(side, QUERIES, "query"), _st(other, QUERIES, "query"))
    _, router = built["router"]  # its document route is splade-tiny as saved (512 tokens)
    _check_equal(_pipeline(document, DOCUMENTS, "document"), _st(router, DOCUMENTS, "document"))


def test_inference_free_sides_need_no_torch(tmp_path):
    """``tokens`` and ``idf:FILE`` sides import neither torch nor transformers (a fresh process)."""
    import subprocess
    import sys

    table = tmp_path / "idf.json"
    table.write_text(json.dumps({"coral": 3.5, "reefs": 2.0, "die": 0.5, ",": 0, "ocean": 1.0}))
    code = ("import sys, json; from pipeline import encoders; from pipeline.models import embedded_model_dir; "
            "from pipeline.models import ModelRef; "
            "doc = encoders.ModelSide(ModelRef('splade-tiny', str(embedded_model_dir()), 'x')); "
            f"side = encoders.query_side('idf:{table}', doc); "
            "q = encoders.load_queries(encoders.QuerySpec(side, 100)); "
            "t = encoders.load_queries(encoders.QuerySpec(encoders.query_side('tokens', doc), 100)); "
            "print(json.dumps([q.encode(['Coral reefs die, coral!'])[0], t.encode(['Coral reefs'])[0], "
            "'torch' in sys.modules, 'transformers' in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    idf, tokens, torch_loaded, transformers_loaded = json.loads(result.stdout)
    assert idf == {"coral": 350, "reefs": 200, "die": 50}  # distinct wordpieces, weight x 100, zeros dropped
    assert tokens == {"coral": 100, "reefs": 100}
    assert not torch_loaded and not transformers_loaded


def test_bm25_idf():
    idf = encoders.bm25_idf(10, np.array([0, 1, 10]))
    assert idf[0] == 0 and idf[1] == pytest.approx(np.log(1 + 9.5 / 1.5)) and 0 < idf[2] < idf[1]


# -- bad input: one line naming the file, nothing loaded -----------------------------------------

def test_missing_module_folder_is_named(built, tmp_path):
    for name, missing in (("symmetric", "1_SpladePooling"), ("router", "query_0_SparseStaticEmbedding")):
        copy = tmp_path / name
        shutil.copytree(built[name][0], copy)
        shutil.rmtree(copy / missing)
        with pytest.raises(InputError, match=rf"{missing}: module folder of \w+ listed in \w+\.json is missing"):
            encoders.resolve(str(copy))


def test_unsupported_module_chain_is_refused_naming_the_module(built, tmp_path):
    copy = tmp_path / "normalised"
    shutil.copytree(built["symmetric"][0], copy)
    modules = json.loads((copy / "modules.json").read_text())
    (copy / "2_Normalize").mkdir()
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                    "type": "sentence_transformers.base.modules.normalize.Normalize"})
    (copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(InputError, match=r"modules\.json: module sentence_transformers\.base\.modules\.normalize"
                                         r"\.Normalize \(2_Normalize\) cannot be reproduced exactly"):
        encoders.resolve(str(copy))
    pooling = json.loads((built["symmetric"][0] / "1_SpladePooling" / "config.json").read_text())
    (copy / "1_SpladePooling" / "config.json").write_text(json.dumps({**pooling, "pooling_strategy": "sum",
                                                                      "activation_function": "log1p_relu"}))
    (copy / "modules.json").write_text(json.dumps(modules[:2]))
    with pytest.raises(InputError, match=r"1_SpladePooling/config\.json: SpladePooling sum with log1p_relu"):
        encoders.resolve(str(copy))


@pytest.mark.parametrize("table, problem", [
    ({"coral": -1.0}, r"weight of 'coral' must be a finite number of at least 0, got -1\.0"),
    ({"coral": float("nan")}, r"weight of 'coral' must be a finite number of at least 0, got nan"),
    ({"coral": "high"}, r"weight of 'coral' is not a number: 'high'"),
    ({"coral": True}, r"weight of 'coral' is not a number: True"),
    ({"Coral-Reef": 1.0}, r"token 'Coral-Reef' is not in the tokenizer's vocabulary"),
    (["coral"], r"expected a JSON object"),
])
def test_bad_idf_json_is_one_line_naming_the_file(tmp_path, table, problem):
    path = tmp_path / "idf.json"
    path.write_text(json.dumps(table))
    with pytest.raises(InputError, match=rf"^{tmp_path}/idf\.json: {problem}") as caught:
        encoders.query_side(f"idf:{path}", encoders.resolve(None).document)
    assert "\n" not in str(caught.value)


def test_query_encoder_with_another_vocabulary_is_refused(tmp_path):
    copy = tmp_path / "renamed"
    shutil.copytree(models.resolve(None).location, copy)
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["koral"] = vocab.pop("coral")
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(InputError, match=rf"^{copy}/tokenizer\.json: query encoder's vocabulary differs"):
        encoders.query_side(str(copy), encoders.resolve(None).document)


def test_pooling_against_the_folders_config_is_refused(built):
    with pytest.raises(PipelineError, match=r"--pooling sum: .* pools with max \(its SpladePooling config\)"):
        encoders.resolve(str(built["symmetric"][0]), pooling="sum")
    with pytest.raises(PipelineError, match=r"--max-length 64 exceeds what .* supports \(48 tokens\)"):
        encoders.resolve(str(built["symmetric"][0]), max_length=64)


# -- through the stages: the index records the query side, search and serve restore it ----------

QUIET = {"progress": False, "say": lambda text: None}


@pytest.fixture(scope="module")
def router_index(built, tmp_path_factory):
    from pipeline import stages
    from pipeline.demo import DEMO_DATA

    root = tmp_path_factory.mktemp("router-index")
    stages.encode(DEMO_DATA / "corpus.jsonl", root / "collection", str(built["router"][0]), threads=2, **QUIET)
    stages.index(root / "collection", root / "index", threads=2, **QUIET)
    return root


@pytest.mark.slow
def test_router_index_searches_with_its_own_query_route(built, router_index):
    from pipeline import stages
    from pipeline.demo import DEMO_DATA, collection_vectors
    from pipeline.errors import ConsistencyError
    from pipeline.index import load_record
    from pipeline.readers import read_run, read_topics

    record = load_record(router_index / "index")
    assert record["query_encoder"]["kind"] == "static"
    assert record["encoder"]["location"].endswith("document_0_MLMTransformer")
    topics_file = DEMO_DATA / "queries.jsonl"
    stages.search(router_index / "index", router_index / "run.txt", topics_file, threads=2, **QUIET)
    spec = encoders.query_spec(record)
    assert spec.inference_free
    texts = read_topics(topics_file)
    terms = encoders.load_queries(spec).encode(list(texts.values()))
    theirs = _quantised(_st(built["router"][1], list(texts.values()), "query"))
    vocab = encoders.WordPieces.load(spec.side.tokenizer).id_to_token
    assert terms == [{vocab[i]: w for i, w in found.items()} for found in theirs]
    # every hit's score is the dot product of the query's terms and the document's impacts
    docs = collection_vectors(router_index / "collection")
    run = read_run(router_index / "run.txt")
    for (qid, hits), query in zip(run.items(), terms):
        for docid, score in list(hits.items())[:5]:
            assert score == sum(w * docs[docid]["vector"].get(t, 0) for t, w in query.items())
    with pytest.raises(ConsistencyError, match=r"query encoder: index .*router.* \(static:sha256:\w+\), query tokens"):
        stages.search(router_index / "index", router_index / "run2.txt", topics_file,
                      options=encoders.Options(query_encoder="tokens"), **QUIET)
    assert not (router_index / "run2.txt").exists()


@pytest.mark.slow
def test_idf_side_weighs_by_the_indexs_postings_and_bad_tables_write_nothing(router_index, tmp_path):
    from pipeline import stages
    from pipeline.demo import collection_vectors
    from pipeline.index import load_record

    record = stages.index(router_index / "collection", router_index / "index", query_encoder="idf", **QUIET)
    assert record["query_encoder"]["kind"] == "idf" and load_record(router_index / "index") == record
    queries = encoders.load_queries(encoders.query_spec(record), index=router_index / "index")
    docs = collection_vectors(router_index / "collection")
    df = {}
    for doc in docs.values():
        for term in doc["vector"]:
            df[term] = df.get(term, 0) + 1
    vocab = queries.tokenizer.vocab
    expected = encoders.bm25_idf(len(docs), np.array([df.get(token, 0) for token in sorted(vocab, key=vocab.get)]))
    np.testing.assert_array_equal(queries.weights, expected)
    assert np.count_nonzero(queries.weights) == len(df)
    bad = tmp_path / "idf.json"
    bad.write_text(json.dumps({"coral": -2}))
    with pytest.raises(InputError, match=r"idf\.json: weight of 'coral' must be a finite number"):
        stages.index(router_index / "collection", tmp_path / "other-index", query_encoder=f"idf:{bad}", **QUIET)
    assert not (tmp_path / "other-index").exists()
    with pytest.raises(InputError, match=r"idf\.json: weight of 'coral'"):  # a finished index keeps its record
        stages.index(router_index / "collection", router_index / "index", query_encoder=f"idf:{bad}", **QUIET)
    assert load_record(router_index / "index") == record


@pytest.mark.slow
def test_service_serves_an_inference_free_index_without_a_model(built, router_index):
    from pipeline.search import ImpactSearcher
    from pipeline.service.backend import close_indexes, open_indexes

    served = open_indexes({"router": router_index / "index"})
    try:
        index = served["router"]
        assert index.describe()["inference_free"] and index.describe()["query_encoder"]["kind"] in ("static", "idf")
        assert isinstance(index.encoder, encoders.StaticQueries)  # a table, no SpladeEncoder loaded
        terms = index.encode(QUERIES)
        spec = encoders.query_spec(index.record)
        assert terms == encoders.load_queries(spec, index=router_index / "index").encode(QUERIES)
        searcher = ImpactSearcher(router_index / "index")
        try:
            expected, _ = searcher.search({str(i): t for i, t in enumerate(terms)}, 10)
        finally:
            searcher.close()
        assert index.search({str(i): t for i, t in enumerate(terms)}, 10) == expected
        assert any(expected.values())
    finally:
        close_indexes(served)


def test_query_spans_equal_the_tokenizers_own_for_any_text_and_are_never_truncated(encoder):
    """The service marks expansions and highlights with a query's spans, read through a copy of the
    Rust tokenizer: the same tokens and offsets as the loaded tokenizer, whatever its last call set."""
    from pipeline.encoders import ModelQueries
    from pipeline.explain import token_spans

    queries = ModelQueries(encoder, 100, "scale")
    long = " ".join(["Vitamin D deficiency"] * 400)  # beyond the 512-token limit
    encoder.tokenize([long])  # the wrapper's truncation is set on the shared Rust tokenizer
    for text in ("Ünïcode café naïve 東京", "  spaced\tout \n text ", "0-dimensional biomaterials", long):
        spans = queries.spans(text)
        assert spans == token_spans(encoder.tokenizer, text)
        assert spans and spans[-1][2] == len(text.rstrip())
