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
            (root / folder / f"{split}_text.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
            (root / folder / f"{split}_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "germeval2017").mkdir()
    names = ["negative", "neutral", "positive"]
    rows = ["id\ttext\trelevance\tsentiment"] + [f"x{i}\t{t}\t{'true' if i % 2 else 'false'}\t{names[int(l)]}"
                                                  for i, (t, l) in enumerate(zip(texts, labels))]
    for split in ("dev", "test_syn"):
        (root / "germeval2017" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.mark.models  # trains and exports a real (tiny) run: minutes
def test_training_writes_loadable_artifacts(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    data, out, intents = tmp_path / "data", tmp_path / "artifacts", tmp_path / "intents"
    _write_benchmarks(data)
    intents.mkdir()
    labels = ["complaint", "question", "cancellation", "praise", "purchase_interest", "spam", "other"]
    rows = [{"text": f"{label} Beispiel {i}", "label": label} for label in labels for i in range(6)]
    (intents / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
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
                "topics-rail-dev-nearest", "train_loss"} <= set(entry)
    assert history[1]["train_loss"] < history[0]["train_loss"]  # it learnt something
    assert training["chosen_epoch"] in (1, 2)
    # LoRA's B matrices start at zero: a saved adapter that is still all zeros would mean no training happened.
    adapters = load_file(str(out / "adapters.safetensors"))
    lora_b = [tensor for name, tensor in adapters.items() if name.endswith("lora_b")]
    assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b)
    assert spec["pooling"] == "first+mean"
    assert training["intent"]["chosen"]["cv_macro_f1"] > 0
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
    assert config.oversampling == {"intents": 2, "umsab-de-train": 2} and config.intent_holdout_every == 10
    assert train.load_config(overrides={"epochs": 1, "lr": None}).epochs == 1
