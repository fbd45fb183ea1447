"""`triage train` (`make train`) end to end on a tiny benchmark-shaped folder: catches breakage before a 30-minute
run does; and the training config (models/train.yaml) is validated like every config file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cli.main import main
from models import train
from models.understanding import TextUnderstanding

TEXTS = {"0": ["Das ist schrecklich, nie wieder", "Worst service ever", "Kein Netz, total nervig"],
         "1": ["Der Zug fährt um acht", "The shop opens at nine", "Heute ist Dienstag"],
         "2": ["Danke, super Service!", "Love it, thank you", "Großartig, vielen Dank"]}


def _write_benchmarks(root: Path) -> None:
    texts = [t for label in TEXTS for t in TEXTS[label]]
    labels = [label for label in TEXTS for _ in TEXTS[label]]
    for folder, splits in (("umsab/german", ("train", "val", "test")), ("umsab/english", ("train", "val", "test")),
                           ("tweeteval/sentiment", ("val", "test"))):
        (root / folder).mkdir(parents=True)
        for split in splits:
            (root / folder / f"{split}_text.txt").write_text("\n".join(_split_texts(texts, folder, split)) + "\n",
                                                            encoding="utf-8")
            (root / folder / f"{split}_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "germeval2017").mkdir()
    names = ["negative", "neutral", "positive"]
    rows = ["id\ttext\trelevance\tsentiment"] + [f"x{i}\t{t}\t{'true' if i % 2 else 'false'}\t{names[int(l)]}"
                                                  for i, (t, l) in enumerate(zip(texts, labels))]
    for split in ("dev", "test_syn"):
        (root / "germeval2017" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    # the train-only additions the shipped `mix` draws from (PotTS' `mixed` rows are left out by the reader)
    for folder in ("arabic", "french", "hindi", "italian", "portuguese", "spanish"):
        (root / "umsab" / folder).mkdir(parents=True)
        for split in ("train", "val", "test"):
            (root / "umsab" / folder / f"{split}_text.txt").write_text(
                "\n".join(_split_texts(texts, f"umsab/{folder}", split)) + "\n", encoding="utf-8")
            (root / "umsab" / folder / f"{split}_labels.txt").write_text("\n".join(labels) + "\n")
    tsv = ["label\ttext", "mixed\tgut und schlecht zugleich"] + [f"{names[int(label)]}\t\"{text}\""
                                                                 for text, label in zip(texts, labels)]
    for folder in ("sb10k", "potts", "semeval2013-2016"):
        (root / folder).mkdir()
        (root / folder / "train.tsv").write_text("\n".join(tsv) + "\n", encoding="utf-8")


def _split_texts(texts: list[str], folder: str, split: str) -> list[str]:
    """UMSAB val texts of their own: training leaves out every validation text, so shared ones would leave no data."""
    return [f"{text} (val)" for text in texts] if folder.startswith("umsab") and split == "val" else texts


def test_validation_texts_are_left_out_of_the_training_sets(tmp_path: Path) -> None:
    from models import datasets
    _write_benchmarks(tmp_path)
    val_text = (tmp_path / "umsab/english/val_text.txt").read_text(encoding="utf-8").splitlines()[0]
    tweeteval = tmp_path / "tweeteval/sentiment/val_text.txt"  # trained on: here it repeats a UMSAB val tweet
    lines = tweeteval.read_text(encoding="utf-8").splitlines()
    tweeteval.write_text("\n".join(["  " + val_text.upper(), *lines[1:]]) + "\n", encoding="utf-8")
    sets = {s.name: s for s in datasets.training_sets(tmp_path, extra=True)}
    assert sets["tweeteval-val"].texts == lines[1:] and len(sets["tweeteval-val"].labels) == len(lines) - 1
    assert all(not text.endswith("(val)") for s in sets.values() for text in s.texts)
    assert len(sets["umsab-en-train"].texts) == len(lines)  # nothing else left out


@pytest.mark.models  # trains and exports a real (tiny) run: minutes
def test_training_writes_loadable_artifacts(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    data, out, intents = tmp_path / "data", tmp_path / "artifacts", tmp_path / "intents"
    _write_benchmarks(data)
    intents.mkdir()
    labels = ["complaint", "question", "cancellation", "praise", "purchase_interest", "spam", "other"]
    rows = [{"text": f"{label} Beispiel {i}", "label": label} for label in labels for i in range(6)]
    (intents / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    care = [{"text": "Toller Service, 45 Minuten Warteschleife 👏", "label": "complaint", "sentiment": "negative",
             "language": "de", "class": "sarcasm"}]
    (intents / "care-hard-train.jsonl").write_text("\n".join(json.dumps(r) for r in care) + "\n")
    assert main(["train", "--data", str(data), "--out", str(out), "--intents", str(intents), "--epochs", "2",
                 "--batch-size", "8", "--cache-dir", settings.models.cache_dir]) == 0
    spec = json.loads((out / "model.json").read_text())
    assert set(spec["heads"]) == {"sentiment", "relevance", "intent"}
    training = spec["training"]
    assert training["epochs"] == 2 and training["batch_size"] == 8  # the overrides reached the run
    assert training["lr"] == train.load_config().lr  # the rest came from models/train.yaml
    history = training["validation"]
    assert [entry["epoch"] for entry in history] == [1, 2]  # validated after every epoch
    for entry in history:
        assert {"umsab-de-val", "umsab-en-val", "intents-train-holdout", "topics-telecom-dev-nearest",
                "topics-rail-dev-nearest", "train_loss", "umsab-hi-val"} <= set(entry)
    assert history[1]["train_loss"] < history[0]["train_loss"]  # it learnt something
    assert training["chosen_epoch"] in (1, 2)
    # LoRA's B matrices start at zero: a saved adapter that is still all zeros would mean no training happened.
    adapters = load_file(str(out / "adapters.safetensors"))
    lora_b = [tensor for name, tensor in adapters.items() if name.endswith("lora_b")]
    assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b)
    assert spec["pooling"] == "first+mean"
    assert training["intent"]["chosen"]["cv_macro_f1"] > 0
    assert any(name.startswith("semeval-train (") for name in training["data"])  # the mix reached the run
    assert training["intent"]["examples"] == len(rows) + len(care)  # stage 2 learnt the hard care posts too
    for task in ("sentiment", "intent"):  # calibrated on held-out data, and the doubt threshold chosen there
        fitted = spec["calibration"][task]
        assert fitted["temperature"] > 0 and 0.3 <= fitted["review_below"] <= 0.95
        assert {"ece_before", "ece_after", "fitted_on"} <= set(fitted)
    assert sum(f.stat().st_size for f in out.iterdir()) < 20_000_000
    result = TextUnderstanding.load(out, settings.models.cache_dir).analyze(["Danke!"])[0]
    assert {"sentiment", "relevance", "intent"} <= set(result)


def test_a_bad_training_config_stops_before_training_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(train.CONFIG_FILE.read_text(encoding="utf-8").replace("epochs: 3", "epocs: 3", 1))
    line = config.read_text().splitlines().index(next(l for l in config.read_text().splitlines()
                                                     if l.startswith("epocs:"))) + 1
    assert main(["train", "--config", str(config), "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert f"{config}:{line}: epocs: Extra inputs are not permitted" in err
    assert "epochs: Field required" in err and "Traceback" not in err
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--lr", "0"]) == 2
    assert "command line --lr: lr: Input should be greater than 0" in capsys.readouterr().err


def test_the_shipped_training_config_keeps_the_released_hyperparameters() -> None:
    config = train.load_config()
    assert (config.epochs, config.batch_size, config.max_tokens, config.lr, config.seed) == (3, 32, 96, 5e-4, 13)
    assert (config.adapter.rank, config.adapter.alpha, config.geometry_weight) == (16, 32, 10.0)
    assert config.oversampling == {"intents": 2, "umsab-de-train": 2, "care-hard": 2}
    assert config.intent_holdout_every == 10
    assert train.load_config(overrides={"epochs": 1, "lr": None}).epochs == 1
    # the v2 mix: every extra set, sized so three epochs stay within about 90 minutes on 2 cores
    assert set(config.mix) == {"sb10k-train", "potts-train", "semeval-train", *(f"umsab-{code}-train" for code in
                                                                                 ("ar", "fr", "hi", "it", "pt", "es"))}
    assert sum(entry.per_epoch for entry in config.mix.values()) * config.epochs < 40_000


def test_a_mix_entry_naming_no_set_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    _write_benchmarks(tmp_path)
    config = train.load_config(overrides={"mix": {"semeval-trian": {"per_epoch": 5}}})
    with pytest.raises(ValueError, match="mix names unknown sets semeval-trian; known: .*semeval-train"):
        train._mix_pools(str(tmp_path), config)


def test_head_selection_scores_a_text_as_much_as_it_counted_in_training() -> None:
    from models import metrics
    labels = ["complaint", "question"]
    gold, predicted = ["complaint", "question", "question"], ["complaint", "complaint", "question"]
    # a weight of 2 scores like the text written twice; a quarter-weight mistake costs less than a full one
    assert metrics.macro_f1(gold, predicted, labels, [1, 2, 1]) == pytest.approx(
        metrics.macro_f1(gold + ["question"], predicted + ["complaint"], labels))
    assert metrics.macro_f1(gold, predicted, labels, [1, 0.25, 1]) > metrics.macro_f1(gold, predicted, labels)


def test_a_balanced_draw_takes_a_rare_label_whole() -> None:
    from models.datasets import LabelledSet
    pool = LabelledSet("x", "sentiment", [f"t{i}" for i in range(100)], ["negative"] * 5 + ["neutral"] * 95)
    drawn = train._draw(pool, train.MixEntry(per_epoch=20, balanced=True), __import__("random").Random(1))
    assert len(drawn) == 20 and sum(1 for _, labels in drawn if labels["sentiment"] == "negative") == 5
    drawn = train._draw(pool, train.MixEntry(per_epoch=20), __import__("random").Random(1))
    assert len(drawn) == 20 and len({text for text, _ in drawn}) == 20


def test_only_the_fields_an_agent_corrected_become_training_labels(tmp_path: Path) -> None:
    exported = tmp_path / "labels.jsonl"
    rows = [{"id": "a", "text": "Kündige zum 31.", "label": "cancellation", "sentiment": "neutral", "topic": None,
             "corrected": ["intent"]},
            {"id": "b", "text": "Wann ist die Störung behoben?", "label": "question", "sentiment": "negative",
             "topic": "network", "corrected": ["sentiment", "topic"]},
            {"id": "c", "text": "nur angesehen", "label": "other", "sentiment": "neutral", "corrected": []}]
    exported.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert train.read_corrections(exported) == [
        {"text": "Kündige zum 31.", "labels": {"intent": "cancellation"}},
        {"text": "Wann ist die Störung behoben?", "labels": {"sentiment": "negative", "topic": "network"}}]
    exported.write_text('{"label": "spam", "corrected": ["intent"]}\n')
    with pytest.raises(ValueError, match="line 1: a correction needs a non-empty 'text'"):
        train.read_corrections(exported)


def test_a_sentiment_edit_gives_each_correction_its_label_and_spares_posts_unlike_them() -> None:
    import torch
    from models.understanding import Head
    generator = torch.Generator().manual_seed(0)
    head = Head(["negative", "neutral", "positive"], torch.nn.Linear(16, 3))
    anchors = torch.randn(2000, 16, generator=generator)
    anchors[:, 14:] *= 0.01  # directions other posts hardly have, and each corrected post does
    fixes = torch.randn(2, 16, generator=generator)
    fixes[:, 14:] = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    gold = head.linear(fixes).argmin(1).detach()  # the label the head likes least
    edited = train._edit_sentiment(head, fixes, gold, anchors, temperature=1.5, confidence=0.5)
    probabilities = torch.softmax(edited.linear(fixes) / 1.5, dim=-1).detach()
    assert probabilities.argmax(1).tolist() == gold.tolist()
    assert probabilities[[0, 1], gold].min() >= 0.499  # just enough: not flagged for review at 0.48
    moved = (edited.linear(anchors) - head.linear(anchors)).abs().mean()
    assert moved < 0.05 * (edited.linear(fixes) - head.linear(fixes)).abs().mean()
    already = train._edit_sentiment(head, fixes, head.linear(fixes).argmax(1).detach(), anchors, 1.5, 0.3)
    assert torch.equal(already.linear.weight, head.linear.weight)  # a post answered as corrected asks for no change


@pytest.mark.models  # refits the heads of the shipped model: a minute or two
def test_a_corrected_post_the_model_got_wrong_comes_out_right_after_a_short_retrain(
        tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    import shutil
    from models.understanding import ARTIFACTS_DIR
    wrong_sentiment = "Hotline war freundlich, Problem besteht trotzdem weiter."  # shipped v2: positive 0.64
    wrong_intent = "Danke für nix, Telekom."  # shipped v2: praise 0.73
    clear = {"Vielen Dank an die Kollegin von der Hotline, super freundlich und schnell!": ("praise", "positive"),
             "Seit drei Tagen kein Internet und die Hotline legt einfach auf. Unfassbar.": ("complaint", "negative")}
    out, data, intents = tmp_path / "artifacts", tmp_path / "data", tmp_path / "intents"
    shutil.copytree(ARTIFACTS_DIR, out)
    _write_benchmarks(data)
    intents.mkdir()  # the team's intent texts only: what changes the answers is the correction alone
    shutil.copy(ARTIFACTS_DIR.parent.parent / "data" / "intents" / "train.jsonl", intents / "train.jsonl")
    before = TextUnderstanding.load(out, settings.models.cache_dir, topics_file="builtin:telecom").analyze(
        [wrong_sentiment, wrong_intent])
    assert before[0]["sentiment"]["label"] != "negative" or before[1]["intent"]["label"] != "complaint"
    topic = "billing" if before[0]["topic"]["label"] != "billing" else "contract"  # a topic it did not get
    exported = tmp_path / "labels.jsonl"
    exported.write_text("\n".join(json.dumps(row) for row in [
        {"id": "1", "text": wrong_sentiment, "label": "complaint", "sentiment": "negative", "topic": topic,
         "corrected": ["sentiment", "topic"]},
        {"id": "2", "text": wrong_intent, "label": "complaint", "sentiment": "negative", "topic": None,
         "corrected": ["intent"]}]) + "\n")
    assert main(["train", "--data", str(data), "--out", str(out), "--stage", "intent", "--intents", str(intents),
                 "--corrections", str(exported), "--cache-dir", settings.models.cache_dir]) == 0
    after = TextUnderstanding.load(out, settings.models.cache_dir, topics_file="builtin:telecom")
    results = after.analyze([wrong_sentiment, wrong_intent, *clear])
    assert results[0]["sentiment"]["label"] == "negative", results[0]["sentiment"]
    assert results[0]["topic"]["label"] == topic  # the corrected post is now an example phrase of its topic
    assert results[1]["intent"]["label"] == "complaint", results[1]["intent"]
    assert [(r["intent"]["label"], r["sentiment"]["label"]) for r in results[2:]] == list(clear.values())
    spec = json.loads((out / "model.json").read_text())
    shipped = json.loads((ARTIFACTS_DIR / "model.json").read_text())["version"].split("+")[0]
    assert spec["version"].startswith(f"{shipped}+heads-")  # enriched posts tell the refit heads apart
    assert spec["training"]["corrections"] == {"intent": 1, "sentiment": 1, "topic": 1, "weight": 4}
    assert spec["topic_examples"] == [topic]  # kept as a vector: no post text in the committed artifacts
    assert wrong_sentiment not in (out / "model.json").read_text()
