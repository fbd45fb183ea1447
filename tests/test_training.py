"""`make train` end to end on a tiny benchmark-shaped folder: catches breakage before a 30-minute run does."""
from __future__ import annotations

import json
from pathlib import Path


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


def test_training_writes_loadable_artifacts(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    data, out, intents = tmp_path / "data", tmp_path / "artifacts", tmp_path / "intents"
    _write_benchmarks(data)
    intents.mkdir()
    labels = ["complaint", "question", "cancellation", "praise", "purchase_interest", "spam", "other"]
    rows = [{"text": f"{label} Beispiel {i}", "label": label} for label in labels for i in range(6)]
    (intents / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert train.main(["--data", str(data), "--out", str(out), "--intents", str(intents), "--epochs", "1",
                       "--batch-size", "8", "--cache-dir", settings.models.cache_dir]) == 0
    spec = json.loads((out / "model.json").read_text())
    assert set(spec["heads"]) == {"sentiment", "relevance", "intent"}
    assert spec["training"]["chosen_epoch"] == 1
    assert {"umsab-de-val", "umsab-en-val", "intents-train-holdout", "topics-telecom-dev-nearest",
            "topics-rail-dev-nearest"} <= set(spec["training"]["validation"][0])
    assert spec["pooling"] == "first+mean"
    assert spec["training"]["intent"]["chosen"]["cv_macro_f1"] > 0
    assert sum(f.stat().st_size for f in out.iterdir()) < 20_000_000
    result = TextUnderstanding.load(out, settings.models.cache_dir).analyze(["Danke!"])[0]
    assert {"sentiment", "relevance", "intent"} <= set(result)
