"""The streaming graph as a portable runner receives it: every named step, fused, with bundle finalization.

No services are needed: the pipeline is only translated (Beam's runner API proto), never run.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from core.config import Settings
from pipeline.stream import StreamJob, build


def _proto(settings: Settings):  # type: ignore[no-untyped-def]
    options = PipelineOptions(["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--streaming"])
    pipeline = beam.Pipeline(options=options)
    build(pipeline, settings, StreamJob(topics=["raw"], group_id="g"))
    return pipeline.to_runner_api()


def test_the_stream_graph_translates_with_every_named_step(settings: Settings) -> None:
    names = {t.unique_name for t in _proto(settings).components.transforms.values()}
    for step in ("ReadKafka", "Enrich/ParseAndValidate", "Enrich/DetectLanguage", "Enrich/DetectPersonalData",
                 "Enrich/ClassifySentimentIntentTopic", "Enrich/RouteAndPrioritize", "IndexAndPublish"):
        assert any(name == step or name.startswith(step + "/") for name in names), step


def test_the_stream_graph_stays_fused_and_commits_in_the_bundle_finalizer(settings: Settings) -> None:
    """FnApiRunner never fires a GroupByKey, window or Flatten while the unbounded source has work, and
    offsets are committed by a bundle finalizer only after every write: both must hold for the graph."""
    proto = _proto(settings)
    urns = {t.spec.urn for t in proto.components.transforms.values()}
    assert not urns & {"beam:transform:group_by_key:v1", "beam:transform:flatten:v1",
                       "beam:transform:window_into:v1"}, urns
    assert "beam:requirement:pardo:finalization:v1" in proto.requirements
