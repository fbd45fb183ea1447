"""Language detection on short, noisy posts: right language, or 'und' rather than a confident wrong guess."""
from __future__ import annotations

import pytest

from models.language import LanguageDetector
from core.config import load_settings


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    cfg = load_settings(environ={}).enrichment
    return LanguageDetector(cfg.languages, cfg.language_min_score, cfg.language_min_letters, cfg.language_min_words)


@pytest.mark.parametrize("text,code", [
    ("Seit drei Tagen kein Internet, die Hotline sagt nur Störung bekannt", "de"),
    ("@TelkoNetz ich kündige zum Monatsende!!! #fail https://x.example/p/1", "de"),
    ("isch hab seit 3 tage kein netz mehr und keiner hilft mir", "de"),
    ("No broadband since Monday and your status page says everything is fine", "en"),
    ("ur app keeps crashing on login, very helpful thx", "en"),
    ("Merci beaucoup pour votre aide rapide", "fr"),
    ("Il treno è in ritardo di due ore, vergogna", "it"),
    ("Mi internet no funciona desde ayer por la tarde", "es"),
    ("Mijn internet werkt al drie dagen niet meer", "nl"),
    ("Od wczoraj nie mam internetu, co się dzieje?", "pl"),
])
def test_detects_language(detector: LanguageDetector, text: str, code: str) -> None:
    assert detector.detect(text).code == code


@pytest.mark.parametrize("text", ["😂😂😂", "👍👍", "lol", "@support #fail", "https://example.com/x 123456"])
def test_too_little_text_is_undetermined(detector: LanguageDetector, text: str) -> None:
    guess = detector.detect(text)
    assert guess.code == "und"
    assert 0.0 <= guess.score < 1.0


def test_unknown_language_in_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="xx"):
        LanguageDetector(["de", "xx"], 0.5, 3)
