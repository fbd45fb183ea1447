"""The `triage` command line: services, setup, batch, stream, publish, query, the agents' desk, reprocess, alerts,
metrics.

Heavy modules (Beam, clients) are imported inside the commands so that logging is configured first
and `triage services up` starts instantly.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable

from core import logs
from core.config import ConfigError, Settings, load_settings
from core.yaml_config import ConfigFileError
from core.redact import redact_text, redact_url
from core.terminal import printable

log = logging.getLogger("triage")


def _services(settings: Settings, args: argparse.Namespace) -> int:
    from core import services
    action = {"up": services.up, "down": services.down, "status": services.status}[args.action]
    print("\n".join(action(settings.services)))
    if args.action == "up":
        print(f"Kafka: {settings.kafka.bootstrap_servers}   Elasticsearch: {redact_url(settings.elasticsearch.url)}")
    return 0


def _dask(settings: Settings, args: argparse.Namespace) -> int:
    from core import dask_cluster
    from core.services import ServiceError
    try:
        if args.action == "up":
            lines = dask_cluster.up(settings.services, args.workers, args.port, args.dashboard_port)
        else:
            lines = {"down": dask_cluster.down, "status": dask_cluster.status}[args.action](settings.services)
    except ServiceError as exc:
        print(f"triage dask: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _setup(settings: Settings, args: argparse.Namespace) -> int:
    from core.provision import setup_all
    print("\n".join(setup_all(settings, kafka=not args.no_kafka, elasticsearch=not args.no_elasticsearch)))
    return 0


def _batch(settings: Settings, args: argparse.Namespace) -> int:
    from cli import report
    from pipeline.batch import BatchJob, run
    job = BatchJob(inputs=args.input, output=args.output, dead_letters=args.dead_letters, kafka_from=args.kafka_from,
                   kafka_to=args.kafka_to, query=args.query, max_errors=args.max_errors, beam_args=args.beam_args)
    summary = run(settings, job)
    print(report.format_batch_summary(summary))
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as handle:
            json.dump({"counters": summary.counters, "seconds": summary.seconds}, handle, indent=1)
    dead = summary.count("dead_letters")
    if args.max_errors is not None and dead > args.max_errors:
        print(f"FAILED: {dead} dead letters, more than --max-errors {args.max_errors}", file=sys.stderr)
        return 3
    return 0


def _stream_status(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.io.consumer_group import format_status, group_status
    status = group_status(settings.kafka, args.group or settings.stream.group_id,
                          args.topic or [settings.kafka.topics.raw])
    print(json.dumps(status.to_dict()) if args.json else format_status(status))
    return 0


def _stream(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline import stream
    if args.status:
        return _stream_status(settings, args)
    job = stream.StreamJob(topics=args.topic or [settings.kafka.topics.raw], group_id=args.group or settings.stream.group_id,
                           workers=args.workers, metrics_port=settings.stream.metrics_port if args.metrics_port is None
                           else args.metrics_port, beam_args=args.beam_args,
                           instance_id=args.instance_id or settings.stream.instance_id)
    worker_argv = (["--config", args.config] if args.config else []) + ["stream"]
    worker_argv += [a for t in job.topics for a in ("--topic", t)] + ["--group", job.group_id]
    code = 1
    try:
        code = stream.run(settings, job, worker_argv)
    except Exception as exc:
        log.debug("stream failed", exc_info=True)
        print(f"triage stream: {_explain(exc)}", file=sys.stderr)
    finally:
        # A worker must really exit (and be restarted) even if a client library left a thread running.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _publish(settings: Settings, args: argparse.Namespace) -> int:
    from connectors.jsonl_publisher import publish
    count = publish(settings.kafka, args.input, args.topic)
    print(f"published {count} records to {args.topic or settings.kafka.topics.raw}")
    return 0


def _source_types() -> list[str]:
    """Every `type:` a sources file accepts, read from the registry of source configurations (connectors/config.py)."""
    from typing import get_args
    from connectors.config import SourceConfig
    union = get_args(SourceConfig)[0]  # Annotated[Union[FeedConfig, ...], Field(discriminator="type")]
    return [literal for source in get_args(union) for literal in get_args(source.model_fields["type"].annotation)]


def _connect(settings: Settings, args: argparse.Namespace) -> int:
    from connectors import run
    from connectors.config import ConnectConfigError
    try:
        counts = run.run(settings, args.config_file, args.source, once=args.once)
    except ConnectConfigError as exc:
        print(f"triage connect: {redact_text(exc)}", file=sys.stderr)
        return 2
    for name, count in counts.items():
        print(f"{name}: " + ("stopped with an error (see the log)" if count < 0 else f"{count} posts delivered"))
    return 1 if any(count < 0 for count in counts.values()) else 0


def _query(settings: Settings, args: argparse.Namespace) -> int:
    from apps import query
    from core.clients import elasticsearch_client
    filters = query.QueryFilters(text=" ".join(args.text) or None, source=args.source, language=args.language,
                                 sentiment=args.sentiment, intent=args.intent, topic=args.topic,
                                 pii_type=args.pii_type, queue=args.queue, priority=args.priority, status=args.status,
                                 pii=args.pii, since=args.since, until=args.until)
    es = elasticsearch_client(settings.elasticsearch)
    index = settings.elasticsearch.read_alias
    try:
        if args.sla:
            return _service_level(es, settings.elasticsearch.cases_read_alias, filters, args)
        if args.top_terms or args.by:
            return _analytics(es, index, filters, args)
        if args.summary:
            result = query.summarize(es, settings.elasticsearch.read_alias, filters, args.interval)
            print(json.dumps(result, indent=1, ensure_ascii=False) if args.json else query.format_summary(result))
        else:
            result = query.search(es, settings.elasticsearch.read_alias, filters, args.size)
            print(json.dumps(result, indent=1, ensure_ascii=False) if args.json else query.format_posts(result))
    finally:
        es.close()
    return 0


def _analytics(es, index: str, filters, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from apps import analytics
    if args.top_terms:
        if not filters.sentiment:
            filters.sentiment = ["negative"]
        result = analytics.top_terms(es, index, filters, args.size)
        text = "\n".join(f"  {printable(term):<24} {count:>6}" for term, count in result)  # type: ignore[attr-defined]
    else:
        counts = analytics.over_time(es, index, filters, args.by, args.interval)
        result = analytics.shares(counts) if args.share else counts
        text = "\n".join(f"  {printable(when)}  " + "  ".join(f"{printable(k)}={v}" for k, v in row.items())
                         for when, row in result.items())
    print(json.dumps(result, indent=1, ensure_ascii=False) if args.json else text)
    return 0


def _service_level(es, index: str, filters, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from apps import service_level
    try:
        result = service_level.service_level(es, index, filters)
    except ValueError as exc:  # a filter cases cannot answer (text, personal data)
        print(f"triage query: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1, ensure_ascii=False) if args.json else service_level.format_service_level(result))
    return 0


def _desk(settings: Settings, args: argparse.Namespace) -> int:
    from apps import desk
    from core.clients import elasticsearch_client
    cfg, agent = settings.elasticsearch, desk.current_agent(args.agent)
    es = elasticsearch_client(cfg)
    try:
        if args.command == "queue":
            result = desk.queue(es, cfg, args.queue, agent if args.mine else None, size=args.size)
            print(json.dumps(result, indent=1, ensure_ascii=False) if args.json else desk.format_queue(result))
            return 0
        if args.command == "export-labels":
            print(f"exported {desk.export_labels(es, cfg, args.out)} corrected posts to {args.out}")
            return 0
        actions = {
            "claim": lambda: desk.claim(es, cfg, args.id, agent, args.force),
            "answer": lambda: desk.answer(es, cfg, args.id, agent, args.note, args.force),
            "close": lambda: desk.close(es, cfg, args.id, agent),
            "relabel": lambda: desk.relabel(es, cfg, args.id, agent, args.intent, args.sentiment, args.topic),
        }
        post = actions[args.command]()
        state = post["agent"]
        by = f" by {state['assignee']}" if state.get("assignee") else ""
        print(printable(f"{args.id}: {state['status']}{by}")  # the assignee may be another agent's chosen name
              + (f", within SLA: {state['within_sla']}" if "within_sla" in state else ""))
        return 0
    except desk.DeskError as exc:
        print(f"triage {args.command}: {printable(exc)}", file=sys.stderr)  # may name another agent or a post id
        return 1
    finally:
        es.close()


def _reply(settings: Settings, args: argparse.Namespace) -> int:
    from apps import reply
    from connectors.config import load as load_sources
    from connectors.replies.base import ReplyError
    from core.clients import elasticsearch_client

    def confirm(text: str, language: str) -> bool:
        """The suggested reply is shown; it goes out only when the agent says so (or --yes)."""
        print(f"Suggested reply ({printable(language)}):\n  {printable(text)}")
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise ReplyError("confirm the suggested reply with --yes, or give your own with --text")
        return input("Send it? [y/N] ").strip().lower() in ("y", "yes", "j", "ja")

    sources = load_sources(args.config_file, require_env=False)
    es = elasticsearch_client(settings.elasticsearch)
    try:
        outcome = reply.reply(settings, reply.ElasticsearchCases(es, settings.elasticsearch), sources, args.case_id,
                              args.text, args.as_account, args.source, confirm)
    except ReplyError as exc:
        print(f"triage reply: {printable(exc)}", file=sys.stderr)
        return 1
    finally:
        es.close()
    print(printable(reply.format_outcome(outcome)))
    return 0


def _handoff(settings: Settings, args: argparse.Namespace) -> int:
    from connectors.helpdesks import config as handoff_config
    path = args.targets or settings.handoff.targets_file
    if not path:
        print("triage handoff: no handoff file: pass --targets handoff.yaml or set handoff.targets_file "
              "(see handoff.example.yaml)", file=sys.stderr)
        return 2
    config = handoff_config.load(path, require_env=not args.status, unused=("webhook_secret_env",))
    if args.status:
        from apps.handoff_status import format_status, handoff_status
        from core.clients import elasticsearch_client
        es = elasticsearch_client(settings.elasticsearch)
        try:
            status = handoff_status(es, settings.elasticsearch.cases_read_alias, [t.name for t in config.targets])
        finally:
            es.close()
        print(json.dumps(status) if args.json else format_status(status))
        return 0
    from apps import handoff
    if not settings.handoff.targets_file:
        log.warning("handoff.targets_file is not set: the case writer publishes no case updates, so only updates "
                    "already on the topic are handed off", extra={"fields": {"targets": path}})
    worker_argv = (["--config", args.config] if args.config else []) + ["handoff", "--targets", path]
    worker_argv += ["--once"] if args.once else []
    return handoff.run(settings, config, args.workers, worker_argv, args.instance_id, args.once)


def _helpdesk_events(settings: Settings, args: argparse.Namespace) -> int:
    import signal
    import threading
    from apps import helpdesk_events, helpdesk_poll
    from connectors.helpdesks import client_for
    from connectors.helpdesks.config import load as load_targets
    from connectors.http import HttpClient
    from core.clients import elasticsearch_client

    config = load_targets(args.targets)
    es = elasticsearch_client(settings.elasticsearch)
    cases = helpdesk_events.HelpdeskCasesIndex(es, settings.elasticsearch)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    pollers = {t.name: (helpdesk_poll.Poller(t.name, client_for(t, HttpClient(config.user_agent)), cases,
                                             args.poll_page), t.poll_every_s)
               for t in config.targets if args.poll and t.poll_every_s}
    polling = threading.Thread(target=helpdesk_poll.run, args=(pollers, stop), daemon=True)
    polling.start()
    hooks = [t.name for t in config.targets if t.webhook_secret_env]
    print(f"Hearing back on http://{args.host}:{args.port}/hooks/<target> for {', '.join(hooks) or 'no target'}"
          f"{'; polling ' + ', '.join(pollers) if pollers else ''}; Ctrl-C stops.", flush=True)
    try:
        helpdesk_events.serve(helpdesk_events.HelpdeskEvents(config, cases), args.host, args.port, stop)
    finally:
        stop.set()
        polling.join(timeout=30)
        es.close()
    return 0


def _reprocess(settings: Settings, args: argparse.Namespace) -> int:
    from apps import reprocess
    report = reprocess.reprocess(settings, args.workdir, args.beam_args)
    print(reprocess.format_report(report, settings.elasticsearch))
    return 0


def _alerts(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import datetime
    from apps import alerts
    from core.clients import elasticsearch_client
    cfg = settings.alerts
    if args.webhook:
        from pydantic import SecretStr
        cfg = cfg.model_copy(update={"webhook_url": SecretStr(args.webhook)})
    es = elasticsearch_client(settings.elasticsearch)
    try:
        now = datetime.fromisoformat(args.now.replace("Z", "+00:00")) if args.now else None
        alerts.run(es, settings.elasticsearch.read_alias, cfg, args.every, now,
                   settings.elasticsearch.cases_read_alias, tuple(args.overdue))
        return 0
    finally:
        es.close()


def _metrics(settings: Settings, args: argparse.Namespace) -> int:
    import threading
    from prometheus_client import CollectorRegistry, start_http_server
    from apps.service_level import CaseGauges
    from core.clients import elasticsearch_client
    registry = CollectorRegistry()  # only the case gauges: the stream workers export their own metrics
    registry.register(CaseGauges(elasticsearch_client(settings.elasticsearch), settings.elasticsearch.cases_read_alias))
    start_http_server(args.port, addr=args.host, registry=registry)
    print(f"Serving open and overdue cases per queue on http://{args.host}:{args.port}/metrics, counted at each "
          "scrape; Ctrl-C stops.", flush=True)
    threading.Event().wait()
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from cli import demo
    code = demo.run(settings, args.samples, start_services=not args.no_services)
    if code or args.no_live:
        return code
    from pathlib import Path
    from cli import demo_live
    return demo_live.run(settings, args.samples, Path(settings.services.data_dir) / "demo", count=args.live_posts)


def _eval(settings: Settings, args: argparse.Namespace) -> int:
    from models import evaluate
    from models.language import LanguageDetector
    from models.pii import PiiDetector
    from pipeline.steps.understanding import load_understanding
    enrichment, models_cfg = settings.enrichment, settings.models
    language = LanguageDetector(enrichment.languages, enrichment.language_min_score, enrichment.language_min_letters,
                                enrichment.language_min_words)
    pii = PiiDetector(settings.pii.phone_regions, settings.pii.person_names_model)
    report = {"language_and_pii": evaluate.language_result(language), "pii": evaluate.pii_results(pii)}
    print(evaluate.format_results([report["language_and_pii"], *report["pii"]],
                                  "Language and personal data (team-written sets in data/eval/)"))
    data = args.data or os.environ.get("TRIAGE_DATA_DIR")
    precisions = ["fp32", "int8"] if args.precision == "both" else [args.precision or ("int8" if models_cfg.int8 else "fp32")]
    for precision in precisions:
        understanding = load_understanding(models_cfg, int8=precision == "int8")
        results = [evaluate.intent_result(understanding), *evaluate.care_results(understanding),
                   *evaluate.care_results(understanding, "outside"), *evaluate.topic_results(understanding.encoder)]
        if data:
            results += evaluate.benchmark_results(understanding, data, args.limit)
        results += evaluate.calibration_results(understanding, data)
        print()
        print(evaluate.format_results(results, f"Sentiment, relevance, intent and topics: {understanding.version}"))
        report[precision] = results
    if not data:
        print("\n(public benchmarks skipped: pass --data ../shared/data or set TRIAGE_DATA_DIR)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, default=lambda r: r.__dict__, indent=1, ensure_ascii=False)
    return 0


def _topics_check(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path
    from models import evaluate
    from pipeline.steps.understanding import load_understanding
    topics_file = args.topics or settings.models.topics_file
    if not topics_file:
        print("triage topics-check: no topics file: pass --topics or set models.topics_file", file=sys.stderr)
        return 2
    posts = Path(args.posts)
    if not posts.is_file():
        print(f"triage topics-check: no labelled posts at {posts}", file=sys.stderr)
        return 2
    encoder = load_understanding(settings.models).encoder
    result, sweep = evaluate.topic_result(encoder, topics_file, posts, posts.stem,
                                          sweep=[round(0.75 + step / 100, 2) for step in range(18)])
    print(evaluate.format_results([result], f"Topics file {topics_file} on {posts} (its own threshold)"))
    best = max(sweep.values())
    print("\nthreshold  accuracy")
    for threshold, accuracy in sweep.items():
        print(f"{threshold:9.2f}  {accuracy:8.3f}{'  best' if accuracy == best else ''}")
    print("\nChoose the threshold on posts you keep apart from the ones you report with; where several tie, a "
          "higher one gives fewer wrong topics to posts unlike your examples.")
    return 0


def _feeds_check(settings: Settings, args: argparse.Namespace) -> int:
    from connectors import feed_check
    from connectors.config import ConnectConfig
    from connectors.http import HttpClient
    rows = feed_check.check(args.targets, HttpClient(ConnectConfig.model_fields["user_agent"].default, max_retries=2))
    print(feed_check.format_table(rows))
    return 0 if all(row.complete for row in rows) else 1


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import datetime
    from cli import generate
    options = generate.Options(n=args.n, seed=args.seed, days=args.days, start=datetime.fromisoformat(
        args.start.replace("Z", "+00:00")) if args.start else generate.Options.start)
    with (sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")) as out:
        count = generate.write(args.samples, options, out)
    print(f"wrote {count} posts to {args.out}", file=sys.stderr)
    return 0


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.mode == "web":
        from cli import bench_web
        return bench_web.run(settings, args.samples, args.n or 10_000, args.requests, args.workdir, args.config)
    if args.mode == "stream":
        from cli import bench_stream
        return bench_stream.run(settings, args.samples, args.duration, args.workdir, args.config)
    if args.mode == "scale":
        from cli import bench_scale
        n = args.n or 200_000
        return bench_scale.run(settings, args.samples, n, min(n, args.batch_n), args.query_sizes, args.workers,
                               args.models, args.repeats, args.workdir, args.config, args.json, args.skip)
    from cli import bench
    return bench.run_batch_benchmark(settings, args.samples, args.n or 10_000, args.workdir, args.config)


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from models import train
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "max_tokens": args.max_tokens, "lr": args.lr,
                 "seed": args.seed, "threads": args.threads}
    return train.run(args.data, args.cache_dir or settings.models.cache_dir, args.train_config, overrides,
                     args.stage, args.out, args.intents, args.corrections)


def _prune_cache(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path
    from models import onnx_runtime
    from models.understanding import ARTIFACTS_DIR, export_key
    cfg = settings.models
    key = export_key(Path(cfg.artifacts) if cfg.artifacts else ARTIFACTS_DIR, cfg.encoder)
    stale = onnx_runtime.stale_exports(cfg.cache_dir, key)
    freed = 0
    for path in stale:
        size = path.stat().st_size
        freed += size
        print(f"{'would remove' if args.dry_run else 'removed'} {path} ({size / 2**20:.0f} MB)")
        if not args.dry_run:
            path.unlink()
    print(f"{len(stale)} old encoder export(s), {freed / 2**20:.0f} MB{' (dry run)' if args.dry_run else ' freed'}; "
          f"kept the current model's files (encoder-{key}-*)")
    return 0


def _web(settings: Settings, args: argparse.Namespace) -> int:
    if args.web_action == "add-user":
        return _web_add_user(settings, args)
    import waitress
    from apps.web.app import create_app
    from connectors.config import load as load_sources
    web = settings.web.model_copy(update={k: v for k, v in (("host", args.host), ("port", args.port),
                                                             ("users_file", args.users)) if v is not None})
    sources = load_sources(args.sources, require_env=False) if args.sources else None
    app = create_app(settings, web, sources)
    print(f"Serving the workspace on http://{web.host}:{web.port}/ "
          f"({'single sign-on through the trusted proxy' if web.trusted_proxy.enabled else 'users from ' + web.users_file}"
          f"{'' if sources else '; replying needs --sources'}); Ctrl-C stops.", flush=True)
    waitress.serve(app, host=web.host, port=web.port, threads=8, ident="triage-web")
    return 0


def _web_add_user(settings: Settings, args: argparse.Namespace) -> int:
    """The password is asked twice on a terminal or read from the first line of stdin: never from the command line,
    where it would stay in the shell history and the process list."""
    import getpass
    from apps.web.users import add_user
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            print("triage web add-user: the two passwords differ; nothing changed", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    users_file = args.users or settings.web.users_file
    new = add_user(users_file, args.name, args.role, password)
    print(printable(f"{'added' if new else 'updated'} {args.name} ({args.role}) in {users_file}"))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triage", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML configuration file (default: $TRIAGE_CONFIG, then built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[Settings, argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("services", _services, "Start, stop or check the local Kafka- and Elasticsearch-compatible servers.")
    sub.add_argument("action", choices=["up", "down", "status"])

    sub = command("dask", _dask, "Start, stop or check a local dask.distributed cluster (a scheduler and worker "
                                 "processes on loopback) for `triage batch ... -- --runner=DaskRunner`.")
    sub.add_argument("action", choices=["up", "down", "status"])
    sub.add_argument("--workers", type=int, default=2, help="up: worker processes, one thread each (default 2)")
    sub.add_argument("--port", type=int, default=8786, help="up: the scheduler's port (default 8786)")
    sub.add_argument("--dashboard-port", type=int, default=8787, help="up: the dashboard's port (default 8787)")

    sub = command("setup", _setup, "Create the Kafka topics, the index template and the index aliases (idempotent).")
    sub.add_argument("--no-kafka", action="store_true", help="only set up Elasticsearch")
    sub.add_argument("--no-elasticsearch", action="store_true", help="only set up Kafka")

    sub = command("batch", _batch, "Enrich posts with the Beam pipeline: files, a Kafka range or an index in; "
                                   "a file, Elasticsearch or Kafka out.")
    sub.add_argument("--input", action="append", required=True,
                     help="JSONL path or glob, 'kafka[:TOPIC]', or 'es[:INDEX]' (repeatable)")
    sub.add_argument("--output", required=True, help="JSONL path, 'es[:INDEX]' or 'kafka[:TOPIC]'")
    sub.add_argument("--dead-letters", help="JSONL path or 'kafka[:TOPIC]' (default: beside a file output, "
                                            "the dead-letter topic for Kafka output, else ./dead-letters.jsonl)")
    sub.add_argument("--from", dest="kafka_from", help="Kafka input start: offset, earliest, latest or ISO time")
    sub.add_argument("--to", dest="kafka_to", help="Kafka input end (exclusive): offset, latest or ISO time")
    sub.add_argument("--query", default="*", help="Elasticsearch query string for index input (default: all)")
    sub.add_argument("--max-errors", type=int, help="exit non-zero when more records than this are dead letters")
    sub.add_argument("--summary-json", help="also write the run's counters to this JSON file")
    sub.add_argument("beam_args", nargs=argparse.REMAINDER,
                     help="after --: Beam pipeline options, e.g. -- --runner=FlinkRunner --setup_file=./setup.py")

    sub = command("stream", _stream, "Run the continuous job: raw-posts topic(s) -> enrichment -> Elasticsearch "
                                     "and the enriched topic, until SIGTERM/SIGINT.")
    sub.add_argument("--topic", action="append", help="raw topic to read (repeatable; default: kafka.topics.raw)")
    sub.add_argument("--group", help="consumer group (default: stream.group_id)")
    sub.add_argument("--workers", type=int, default=1, help="worker processes in the consumer group (default 1)")
    sub.add_argument("--metrics-port", type=int, help="Prometheus port (default: stream.metrics_port; 0 disables)")
    sub.add_argument("--instance-id", help="static group membership id (default: stream.instance_id, else "
                                           "<hostname>-<worker index>); a restart with the same id resumes at once")
    sub.add_argument("--status", action="store_true",
                     help="print the consumer group's members, assignment and lag, and exit (starts no worker)")
    sub.add_argument("--json", action="store_true", help="with --status: one JSON object")
    sub.add_argument("beam_args", nargs=argparse.REMAINDER, help="after --: Beam pipeline options")

    sub = command("publish", _publish, "Send Post records from JSONL files to the raw-posts Kafka topic.")
    sub.add_argument("--input", action="append", required=True, help="JSONL path or glob (repeatable)")
    sub.add_argument("--topic", help="topic (default: kafka.topics.raw)")

    sub = command("connect", _connect, f"Run the sources in a sources file (types: {', '.join(_source_types())}) "
                                       "into the raw-posts topic until SIGTERM/SIGINT. An entry, e.g.: {type: khoros, "
                                       "name: forum, url: https://community.example.de, boards: [mobilfunk]} or "
                                       "{type: google_play, name: android, package_name: de.example.app} "
                                       "(README, Connectors, shows every type).")
    sub.add_argument("source", nargs="*", help="names of the sources to run (default: all in the file)")
    sub.add_argument("--sources", dest="config_file", default="sources.yaml", help="sources file (default sources.yaml)")
    sub.add_argument("--once", action="store_true", help="one pass of every feed and replay, then exit (no webhook)")

    sub = command("query", _query, "Search the posts index (redacted text) or summarise it.")
    sub.add_argument("text", nargs="*", help="full-text query (German and English stemming; +, | and - work)")
    for facet in ("source", "language", "sentiment", "intent", "topic", "pii-type", "queue", "priority", "status"):
        sub.add_argument(f"--{facet}", action="append", default=[], help=f"only posts with this {facet} (repeatable)")
    sub.add_argument("--pii", action=argparse.BooleanOptionalAction, default=None,
                     help="only posts with (--pii) or without (--no-pii) personal data")
    sub.add_argument("--since", help="created at or after (e.g. 2026-11-01 or now-7d)")
    sub.add_argument("--until", help="created at or before")
    sub.add_argument("--size", type=int, default=20, help="posts to show (default 20)")
    sub.add_argument("--summary", action="store_true", help="counts by source, language, labels and day")
    sub.add_argument("--interval", default="day", choices=["hour", "day", "week", "month"])
    sub.add_argument("--by", choices=["source", "language", "sentiment", "intent", "topic", "queue", "priority", "status"],
                     help="posts per --interval split by this field (e.g. --by sentiment --share)")
    sub.add_argument("--share", action="store_true", help="with --by: fractions of each interval instead of counts")
    sub.add_argument("--sla", action="store_true",
                     help="service level of cases (the cases index) per queue, channel and day: open, overdue, "
                          "unanswered by the due time and after 24 h, first-response p50/p90, share within SLA, "
                          "answers via channel/product/helpdesk; takes the label, --queue/--source/--priority/"
                          "--status and --since/--until (first post) filters")
    sub.add_argument("--top-terms", action="store_true", help="most frequent words (default: of negative posts)")
    sub.add_argument("--json", action="store_true", help="JSON instead of a table")

    def desk_command(name: str, help: str) -> argparse.ArgumentParser:
        sub = command(name, _desk, help)
        sub.add_argument("--agent", help="who is acting (default: $TRIAGE_AGENT, then the login name)")
        return sub

    sub = desk_command("queue", "Open posts for agents, most urgent first (priority, then due time).")
    sub.add_argument("--queue", help="only this queue (e.g. billing)")
    sub.add_argument("--mine", action="store_true", help="only posts claimed by me")
    sub.add_argument("--size", type=int, default=30)
    sub.add_argument("--json", action="store_true")
    sub = desk_command("claim", "Take a post; refused when another agent holds it.")
    sub.add_argument("id")
    sub.add_argument("--force", action="store_true", help="take it over from another agent")
    sub = desk_command("answer", "Mark a post answered (records whether it met its deadline).")
    sub.add_argument("id")
    sub.add_argument("--note", help="a note for colleagues, kept beside the raw post")
    sub.add_argument("--force", action="store_true", help="answer although another agent holds it")
    sub = desk_command("close", "Close a post that needs no answer (spam, duplicate).")
    sub.add_argument("id")
    sub = desk_command("relabel", "Correct the model's labels; corrections become training data.")
    sub.add_argument("id")
    sub.add_argument("--intent")
    sub.add_argument("--sentiment")
    sub.add_argument("--topic")
    sub = desk_command("export-labels", "Write agents' corrected labels as JSONL training data (redacted text).")
    sub.add_argument("--out", default="corrected-labels.jsonl")

    sub = command("reply", _reply, "Answer a case on its channel (X, Mastodon, Reddit, Facebook, YouTube, Discourse) "
                                   "as a brand account of the sources file: at most once, never with personal data "
                                   "in public; a private case gets the invitation publicly and your text as a "
                                   "direct message where the API has them.")
    sub.add_argument("case_id", metavar="CASE_ID")
    sub.add_argument("--text", help="the reply (default: the case's suggested reply, shown for confirmation)")
    sub.add_argument("--as", dest="as_account", metavar="ACCOUNT",
                     help="the brand account to answer as (one of the source's reply_accounts; default: the first)")
    sub.add_argument("--source", help="the sources-file entry to answer through (default: the one of the post's API "
                                      "with reply_accounts, for Mastodon/Discourse of the post's server)")
    sub.add_argument("--sources", dest="config_file", default="sources.yaml", help="sources file (default sources.yaml)")
    sub.add_argument("--yes", action="store_true", help="send the suggested reply without asking")

    sub = command("handoff", _handoff, "Hand routed cases to the helpdesk(s) of a handoff file (Zammad, Zendesk, "
                                       "Freshdesk, Chatwoot, signed webhook): one ticket per case and one follow-up "
                                       "per further customer post, exactly once, from the case-updates topic.")
    sub.add_argument("--targets", help="handoff file (default: handoff.targets_file; see handoff.example.yaml)")
    sub.add_argument("--workers", type=int, default=1, help="worker processes in each target's consumer group "
                                                            "(default 1; supervised: a dead worker is restarted)")
    sub.add_argument("--instance-id", help="static group membership id of this worker (default <hostname>-<index>)")
    sub.add_argument("--once", action="store_true", help="hand off what is on the topic, then exit")
    sub.add_argument("--status", action="store_true",
                     help="print per target how many cases are creating/created/pending/failed and the pending and "
                          "failed ones with their reasons, and exit")
    sub.add_argument("--json", action="store_true", help="with --status: one JSON object")

    sub = command("web", _web, "Serve the web workspace for agents (queue, cases, replies), supervisors (service "
                               "level) and analysts (search): triage web --users users.yaml --sources sources.yaml; "
                               "`triage web add-user NAME --role agent` adds a user.")
    sub.add_argument("--host", help="address to bind (default: web.host, 127.0.0.1)")
    sub.add_argument("--port", type=int, help="port (default: web.port, 8080)")
    sub.add_argument("--users", help="users file (default: web.users_file, users.yaml)")
    sub.add_argument("--sources", help="sources file with the brand's reply accounts (needed to reply)")
    web_actions = sub.add_subparsers(dest="web_action", metavar="ACTION")
    add = web_actions.add_parser("add-user", help="add a user or change their role and password (asked twice, or "
                                                  "the first line of stdin)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=["agent", "supervisor", "analyst"])
    add.add_argument("--users", help="users file (default: web.users_file, users.yaml)")

    sub = command("reprocess", _reprocess, "Re-enrich the posts index with the current models and rules into a new "
                                           "index version, then swap the aliases (no downtime, agents' fields kept).")
    sub.add_argument("--workdir", default=".triage/reprocess", help="where dead letters of the run go")
    sub.add_argument("beam_args", nargs=argparse.REMAINDER,
                     help="after --: Beam pipeline options for the re-enrichment, e.g. -- --runner=DaskRunner "
                          "--dask_client_address=tcp://127.0.0.1:8786")

    sub = command("alerts", _alerts, "Detect spikes (topic volume, negative share) in the last hour against the same "
                                     "hour of previous days, and overdue cases (--overdue P1); post them to a "
                                     "Slack/Teams webhook.")
    sub.add_argument("--webhook", help="incoming-webhook URL (default: alerts.webhook_url / TRIAGE_ALERTS__WEBHOOK_URL)")
    sub.add_argument("--every", type=float, help="keep checking every this many seconds")
    sub.add_argument("--now", help="evaluate as of this ISO time instead of the current time (replays)")
    sub.add_argument("--overdue", action="append", default=[], metavar="PRIORITY",
                     help="also alert on open cases of this priority past their due time (e.g. --overdue P1; "
                          "repeatable), each case once per due time while --every runs")

    sub = command("helpdesk-events", _helpdesk_events, "Hear back from the helpdesks of the handoff file: "
                  "POST /hooks/<target> receives each one's signed webhooks (answered, closed, reassigned) and writes "
                  "them into the case; --poll also polls the targets with poll_every_s.")
    sub.add_argument("--targets", default="handoff.yaml", help="the handoff file (default: handoff.yaml)")
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; put TLS in front)")
    sub.add_argument("--port", type=int, default=8790, help="port (default 8790)")
    sub.add_argument("--poll", action="store_true", help="also poll the targets that have poll_every_s")
    sub.add_argument("--poll-page", type=int, default=100, help="cases looked up per target and round (default 100)")

    sub = command("metrics", _metrics, "Serve Prometheus gauges of open and overdue cases per queue "
                                       "(triage_cases_open, triage_cases_overdue), counted from the cases index at "
                                       "each scrape.")
    sub.add_argument("--port", type=int, default=9465, help="port of /metrics (default 9465; the stream uses 9464)")
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")

    sub = command("demo", _demo, "Start local services, set them up, enrich and index the sample posts, summarise; "
                                 "then watch replayed and webhook posts flow through the streaming job.")
    sub.add_argument("--samples", default="data/samples/*.jsonl", help="sample posts (default: data/samples/*.jsonl)")
    sub.add_argument("--no-services", action="store_true", help="use the Kafka/Elasticsearch in the configuration")
    sub.add_argument("--no-live", action="store_true", help="skip the live part (replay + webhook -> stream job)")
    sub.add_argument("--live-posts", type=int, default=60, help="posts the live replay sends (default 60)")

    sub = command("topics-check", _topics_check, "Measure a topics file on your own labelled posts: accuracy, "
                                                 "per-topic F1 and accuracy by threshold.")
    sub.add_argument("--posts", required=True, help="JSONL, one post a line: {\"text\": ..., \"topic\": NAME or null}")
    sub.add_argument("--topics", help="topics file (default: models.topics_file)")

    sub = command("feeds-check", _feeds_check, "Check that the RSS/Atom connector accounts for every entry of your "
                                               "feeds (posts, skipped, malformed) against feedparser's reading; "
                                               "exit 1 when one is lost.")
    sub.add_argument("targets", nargs="+", metavar="DIR_OR_URL", help="feed files, folders of feed files, http(s) URLs")

    sub = command("eval", _eval, "Measure every model: sentiment/relevance on public benchmarks, intent, language, "
                                 "personal data.")
    sub.add_argument("--data", help="folder with umsab/, tweeteval/, germeval2017/ (default: $TRIAGE_DATA_DIR)")
    sub.add_argument("--precision", choices=["fp32", "int8", "both"], help="encoder precision (default: models.int8)")
    sub.add_argument("--limit", type=int, help="only the first N texts of each public test set (quick check)")
    sub.add_argument("--json", help="also write all results to this JSON file")

    sub = command("prune-cache", _prune_cache, "Remove ONNX exports of other model versions from models.cache_dir "
                                               "(about 600 MB each); the configured model's files stay.")
    sub.add_argument("--dry-run", action="store_true", help="only list what would be removed")

    sub = command("train", _train, "Train the encoder adapters and the sentiment, relevance and intent heads "
                                   "(models/artifacts/) with the hyperparameters in models/train.yaml.")
    sub.add_argument("--data", required=True, help="folder with umsab/, tweeteval/, germeval2017/")
    sub.add_argument("--config", dest="train_config", metavar="FILE",
                     help="training hyperparameters (default: models/train.yaml)")
    sub.add_argument("--stage", choices=["all", "encoder", "intent"], default="all",
                     help="encoder: adapters and heads (about 75 min on 2 cores); intent: refit the intent head, and "
                          "the sentiment head for --corrections, then calibrate (a minute or two)")
    sub.add_argument("--out", help="where the artifacts go (default: models/artifacts)")
    sub.add_argument("--intents", help="folder with the intent train.jsonl (default: data/intents)")
    sub.add_argument("--corrections", metavar="FILE", help="agents' corrected labels (triage export-labels output) "
                                                           "to learn from, weighted (corrections in models/train.yaml)")
    sub.add_argument("--cache-dir", help="where the base encoder is built and cached (default: models.cache_dir)")
    for option, kind in (("--epochs", int), ("--batch-size", int), ("--max-tokens", int), ("--lr", float),
                         ("--seed", int), ("--threads", int)):
        sub.add_argument(option, type=kind, help="override this value of the training config for one run")

    sub = command("generate", _generate, "Write many realistic posts (the Post schema) made from the samples: "
                                         "both languages, every source, threads with the brand's answers, repeat "
                                         "authors, weeks of time, some personal data; the same file for a seed.")
    sub.add_argument("--n", type=int, default=200_000, help="posts to write (default 200000)")
    sub.add_argument("--out", required=True, help="JSONL file to write, or - for standard output")
    sub.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    sub.add_argument("--start", help="time of the first post (ISO, default 2026-11-01T00:00:00Z)")
    sub.add_argument("--days", type=float, default=28, help="days the posts spread over (default 28)")
    sub.add_argument("--samples", default="data/samples/*.jsonl", help="posts to vary (default: data/samples/*.jsonl)")

    sub = command("bench", _bench, "Benchmark batch enrichment (JSONL->JSONL, JSONL->Elasticsearch, naive baseline) "
                                   "or the streaming job (fixed rates, latency percentiles), or the web workspace "
                                   "(page times over N indexed posts).")
    sub.add_argument("mode", nargs="?", choices=["batch", "stream", "web", "scale"], default="batch",
                     help="web: generated posts indexed with cheap fake enrichment, then `triage web` timed; scale: "
                          "batch on FnApiRunner and Dask, stream with 1 and N workers and a killed worker, reprocess "
                          "with a reader, the product's queries at each --query-sizes")
    sub.add_argument("--n", type=int, help="batch: posts to enrich; web: posts to index (default 10000); scale: posts "
                                           "to reprocess (default 200000)")
    sub.add_argument("--batch-n", type=int, default=20_000,
                     help="scale: posts for each batch run, on FnApiRunner and on Dask with each --workers (default "
                          "20000: three runs of 200,000 with the real models would take over an hour on 2 cores)")
    sub.add_argument("--requests", type=int, default=200, help="web: requests per page timed (default 200)")
    sub.add_argument("--duration", type=float, default=60.0, help="stream: seconds per rate (default 60)")
    sub.add_argument("--samples", default="data/samples/*.jsonl", help="posts to repeat and vary")
    sub.add_argument("--workdir", default=".triage/bench", help="where generated input and outputs go")
    sub.add_argument("--query-sizes", type=_counts, default=[50_000, 200_000], metavar="N,N",
                     help="scale: indexed posts at which the product's queries are timed (default 50000,200000)")
    sub.add_argument("--workers", type=_counts, default=[1, 2], metavar="N,N",
                     help="scale: Dask workers and stream workers to measure (default 1,2; failover with the largest)")
    sub.add_argument("--models", choices=["real", "fake"], default="real",
                     help="scale: enrich with the configured models, or with pipeline/testing.py's fakes (a quick "
                          "check of the tooling)")
    sub.add_argument("--repeats", type=int, default=20, help="scale: times each query is asked per size (default 20)")
    sub.add_argument("--json", help="scale: also write every figure to this JSON file")
    sub.add_argument("--skip", type=_phases, default=[], metavar="PHASE,PHASE",
                     help="scale: phases not to run, of batch,stream (the indexed phases, queries and reprocess, "
                          "always run)")
    return parser


def _phases(text: str) -> list[str]:
    """A comma-separated list of `bench scale` phases to skip (--skip batch,stream)."""
    from cli.bench_scale import SKIPPABLE
    phases = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [phase for phase in phases if phase not in SKIPPABLE]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown phase {', '.join(unknown)}: choose from {', '.join(SKIPPABLE)}")
    return phases


def _counts(text: str) -> list[int]:
    """A comma-separated list of positive counts (--query-sizes 50000,200000)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "beam_args", None) and args.beam_args[0] == "--":
        args.beam_args = args.beam_args[1:]
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"triage: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.logging)
    try:
        return args.handler(settings, args)
    except KeyboardInterrupt:
        return 130
    except ConfigFileError as exc:  # a rules, topics, sources or training file: FILE:LINE: key: problem, exit 2
        print(f"triage {args.command}: {redact_text(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a clear one-line error for users; the traceback goes to the debug log
        log.debug("command failed", exc_info=True)
        print(f"triage {args.command}: {_explain(exc)}", file=sys.stderr)
        return 1


def _explain(exc: Exception) -> str:
    """Turn connection failures into advice; other errors are shown as they are."""
    from elastic_transport import ConnectionError as EsConnectionError
    from kafka.errors import KafkaTimeoutError
    if isinstance(exc, KafkaTimeoutError) and "bootstrap" in str(exc):
        return ("cannot reach Kafka (kafka.bootstrap_servers / TRIAGE_KAFKA_BOOTSTRAP). "
                "Start the local services with `triage services up`, or point TRIAGE_KAFKA_BOOTSTRAP at your cluster.")
    if isinstance(exc, EsConnectionError):
        return ("cannot reach Elasticsearch (elasticsearch.url / TRIAGE_ES_URL). "
                "Start the local services with `triage services up`, or point TRIAGE_ES_URL at your cluster.")
    return redact_text(f"{type(exc).__name__}: {exc}")  # client errors often quote the URL, credentials too


if __name__ == "__main__":
    sys.exit(main())
