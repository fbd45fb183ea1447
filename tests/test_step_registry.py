"""Steps are found by name through entry points, and a configured order that cannot work stops the start."""
from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from core.config import ConfigError
from pipeline.steps import registry
from pipeline.testing import FakeLanguage


def test_the_built_in_steps_are_registered_through_entry_points() -> None:
    assert {"language", "pii", "understanding", "routing"} <= set(registry.registered())
    steps = registry.resolve(["language", "pii", "understanding", "routing"])
    assert [step.name for step in steps] == ["language", "pii", "understanding", "routing"]


@pytest.mark.parametrize("order,message", [
    (["routing", "language", "pii", "understanding"], "routing requires language, provided by language, "
                                                      "which comes after it"),
    (["language", "pii", "routing", "understanding"], "routing requires sentiment, provided by understanding, "
                                                      "which comes after it"),
    (["language", "pii", "routing"], "routing requires sentiment, provided by understanding, "
                                     "which is not in enrichment.steps"),
    (["language", "translate"], "unknown step(s) translate"),
])
def test_an_order_that_cannot_work_is_refused_with_the_reason(order: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry.resolve(order)


class Shout(FakeLanguage):
    """A step another package could ship: needs the language, adds its own field."""
    name, label, requires, provides = "shout", "Shout", ("language",), ("shout",)


def test_another_package_adds_a_step_by_declaring_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    point = EntryPoint("shout", f"{__name__}:Shout", registry.ENTRY_POINT_GROUP)
    installed = registry.registered()
    monkeypatch.setattr(registry, "registered", lambda: {**installed, "shout": point})
    assert registry.resolve(["language", "shout"])[-1] is Shout
    with pytest.raises(ConfigError, match="shout requires language, provided by language, which comes after it"):
        registry.resolve(["shout", "language"])
