"""The ``batchscope`` command. Loads settings once, with the secrets the command uses and no other
(:data:`SECRETS`), configures logging, maps errors to one line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from pipeline import __version__
from pipeline.clickhouse.queries import SavedQuery
from pipeline.clickhouse.store import QueryResult, Store
from pipeline.config import Secrets, Settings, load_settings
from pipeline.core.errors import BatchscopeError, ConfigError
from pipeline.logs import setup_logging
from pipeline.providers import PROVIDERS

log = logging.getLogger("batchscope")

FORMATS = ("table", "json", "csv")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits with one line (and status 2) on a bad argument."""

    def error(self, message: str) -> Any:
        self.exit(2, f"batchscope: {message} (see '{self.prog} --help')\n")


DESCRIPTION = """\
Watch LLM batch jobs across provider accounts (OpenAI, Anthropic, Gemini, Bedrock and more):
poll their batch APIs, stream every change through Kafka, keep the history in ClickHouse, and
answer questions about the fleet from the terminal."""

EPILOG = """\
examples:
  batchscope run                        everything in one process; with no [[sources]]
                                        configured it polls a built-in simulated fleet
  batchscope status                     the fleet at a glance, with progress and ETA
  batchscope query                      list the saved queries
  batchscope query --saved stalled      run one of them
  batchscope run --config prod.toml     --config goes before or after the command

settings: the --config file, else $BATCHSCOPE_CONFIG, else ./batchscope.toml if it exists;
BATCHSCOPE_* environment variables override the file. If --config is given both before and
after the command, the one after the command is used.

Run 'batchscope COMMAND --help' for what a command does and its options."""

CONFIG_HELP = "settings file (default: $BATCHSCOPE_CONFIG, else ./batchscope.toml if it exists)"


class _Commands:
    """Adds the subcommands, each with the same --config option as the top level."""

    def __init__(self, parser: ArgumentParser) -> None:
        self._sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                          parser_class=ArgumentParser, title="commands")

    def add(self, name: str, summary: str, details: str = "", examples: str = "") -> ArgumentParser:
        """``summary``: one line for the command list; ``details`` and ``examples``: preformatted
        text for the command's own --help."""
        command = self._sub.add_parser(
            name, help=summary, description=f"{summary[0].upper()}{summary[1:]}.\n\n{details}".rstrip(),
            epilog=f"examples:\n{examples}" if examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        # SUPPRESS: when absent after the command, the value given before it (or None) stands.
        command.add_argument("--config", "-c", metavar="PATH", default=argparse.SUPPRESS, help=CONFIG_HELP)
        return command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="batchscope", description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"batchscope {__version__}")
    parser.add_argument("--config", "-c", metavar="PATH", help=CONFIG_HELP)
    commands = _Commands(parser)
    _add_pipeline_commands(commands)
    _add_admin_commands(commands)
    _add_query_commands(commands)
    _add_simulate(commands)
    return parser


def _add_pipeline_commands(commands: _Commands) -> None:
    commands.add("run", "run the whole pipeline in one process: poll, normalise, track changes, store",
                 "Applies the ClickHouse migrations and creates the Kafka topics first, then polls\n"
                 "every configured source. With no [[sources]] in the settings, it starts a simulated\n"
                 "fleet and polls that, so you can try batchscope without an API key. Logs a progress\n"
                 "line every 10 s; Ctrl-C stops it. While it runs, 'batchscope query' and\n"
                 "'batchscope status' read its database.",
                 "  batchscope run\n  batchscope run --config batchscope.toml")
    commands.add("poll", "poll the configured sources and publish what they report to Kafka",
                 "The poller alone, as the 'poller' service of a multi-process deployment: it needs\n"
                 "at least one [[sources]] table and publishes to the <prefix>.raw topic; run\n"
                 "'batchscope worker' to process it. Serves /metrics and /health on\n"
                 "pipeline.metrics_port. Logs a progress line every 10 s; Ctrl-C stops it.")
    commands.add("webhooks", "receive the providers' signed batch webhooks and hand them to the poller",
                 "Serves every source that has webhook_secret_env or webhook_secret_file on its\n"
                 "webhook_path (default /webhooks/<name>), on webhooks.host:webhooks.port. Each\n"
                 "request is verified (Standard Webhooks signature, timestamp within\n"
                 "webhooks.tolerance, body under webhooks.max_body_kib) and its event published to\n"
                 "<prefix>.hints before it is answered 2xx; the poller fetches the batch at once.\n"
                 "'batchscope run' serves the same receiver itself when a source has a webhook\n"
                 "secret. Serves /metrics and /health on pipeline.metrics_port. Put it behind a TLS\n"
                 "reverse proxy that forwards only its paths (docs/webhooks.md).",
                 "  batchscope webhooks --config batchscope.toml")
    worker = commands.add(
        "worker", "process what the poller published: normalise, track changes, store in ClickHouse",
        "The processing stages alone, as the 'worker' service of a multi-process deployment.\n"
        "Start several workers to share the work (up to kafka.partitions of them do work).",
        "  batchscope worker\n  batchscope worker --agents sink")
    worker.add_argument("--agents", default="normalise,track,sink", type=_agent_list,
                        help="comma-separated subset of normalise,track,sink (default: all three)")
    alerts = commands.add(
        "alerts", "send the alerts the [[alerts]] rules ask for, to Slack or a signed webhook",
        "Reads <prefix>.changes in its own consumer group (<app_id>-alerts) and delivers each\n"
        "(rule, event) once, recorded in <prefix>.alerts-sent; a burst becomes digests.\n"
        "'batchscope alerts test RULE' sends a sample alert to RULE's destination instead, to\n"
        "check the wiring. Logs a progress line every 10 s; Ctrl-C stops it. See docs/alerts.md.",
        "  batchscope alerts\n  batchscope alerts test failures")
    alerts.add_argument("action", nargs="?", choices=["test"], help="test: send one sample alert")
    alerts.add_argument("rule", nargs="?", help="the rule whose destination 'test' sends to")


def _add_admin_commands(commands: _Commands) -> None:
    commands.add("migrate", "create or upgrade the ClickHouse tables (safe to run again)",
                 "Then loads the price table (the shipped prices and [spend] prices_file) and the\n"
                 "sources' teams, as 'batchscope prices load' does.")
    prices = commands.add(
        "prices", "load the batch price table into ClickHouse, or check the price files",
        "load: replace the price table with the shipped prices plus your [spend] prices_file\n"
        "(its rows win), and the sources' teams with their tags; check: read and check both\n"
        "files, touching nothing. The format: docs/spend.md.",
        "  batchscope prices load\n  batchscope prices check --config prod.toml")
    prices.add_argument("action", choices=("load", "check"), help="load (the default) or check",
                        nargs="?", default="load")
    topics = commands.add("topics", "create the Kafka topics that are missing and show how they are set up",
                          "Prints each topic's partitions, replicas and retention settings.")
    topics.add_argument("--describe", action="store_true", help="only show the topics, create nothing")
    health = commands.add(
        "health", "exit 0 if a batchscope process answers healthy (for container healthchecks)",
        "Exits 1 with one line saying why otherwise.",
        "  batchscope health\n  batchscope health --url http://127.0.0.1:9108/health --timeout 2")
    health.add_argument("--url", help="the URL to GET (default: /health on 127.0.0.1:pipeline.metrics_port)")
    health.add_argument("--timeout", type=_seconds, default=5.0,
                        help="seconds to wait (default 5, at most 3600)")


def _add_query_commands(commands: _Commands) -> None:
    query = commands.add(
        "query", "run SQL or a saved query against the batch database (read-only by default)",
        "With no SQL and no --saved, lists the saved queries. Unqualified table names resolve in\n"
        "the configured database (batch_current: the latest state of every batch;\n"
        "batch_snapshots: every observation; batch_changes: every change).",
        "  batchscope query\n"
        "  batchscope query \"SELECT status, count() FROM batch_current GROUP BY status\"\n"
        "  batchscope query --saved stalled --param stall_minutes=60 --format csv")
    query.add_argument("sql", nargs="?", help="the SQL to run")
    query.add_argument("--saved", "-s", metavar="NAME", help="run the saved query NAME instead")
    query.add_argument("--param", "-p", action="append", metavar="NAME=VALUE",
                       help="a value for a {NAME:Type} placeholder (repeatable)")
    query.add_argument("--format", "-f", choices=FORMATS, default="table",
                       help="output format (default: table)")
    query.add_argument("--write", action="store_true", help="allow statements that change data")
    norm = commands.add(
        "normalise", "convert a provider's batch JSON into batchscope's canonical records",
        "Reads one batch object, a list response or a JSON array on stdin; prints one canonical\n"
        "snapshot per batch as a JSON line. Invalid input exits 2 with one line.",
        "  curl -s https://api.openai.com/v1/batches -H \"Authorization: Bearer $OPENAI_API_KEY\" \\\n"
        "    | batchscope normalise --provider openai --source team-a")
    norm.add_argument("--provider", required=True, choices=PROVIDERS, help="the provider the JSON came from")
    norm.add_argument("--source", required=True, help="the source name to put in each snapshot")
    commands.add("status", "show the fleet: batches by status, progress and ETA, at-risk and stalled batches",
                 "The ETA assumes the batch keeps the pace it has had so far: processed requests over\n"
                 "the time since it went in progress (or since it was created, for providers that\n"
                 "give no start time, where queueing counts too). It shows ? until a request is\n"
                 "processed. Long batch ids are shortened in the middle with '…'.")


def _add_simulate(commands: _Commands) -> None:
    sim = commands.add(
        "simulate", "serve a simulated fleet of batch jobs, every provider's API, until Ctrl-C",
        "Each simulated source speaks one provider's batch API under\n"
        "http://127.0.0.1:PORT/<source>/...; the ground truth is at /_sim/truth. Options not\n"
        "given come from [simulator] in the settings.",
        "  batchscope simulate --port 8787\n"
        "  batchscope simulate --sources 2 --providers bedrock,gemini --fault-rate 0.05")
    sim.add_argument("--batches", type=int, help="batches per simulated source")
    sim.add_argument("--sources", type=int, help="number of simulated sources")
    sim.add_argument("--seed", type=int, help="fleet seed")
    sim.add_argument("--speed", type=float, help="simulated seconds per real second")
    sim.add_argument("--port", type=int, help="port on 127.0.0.1 (0: any free port)")
    sim.add_argument("--fault-rate", type=float, dest="fault_rate",
                     help="share of API requests answered with an injected fault (0-1): 429 with "
                          "Retry-After in seconds or HTTP-date form, 500/502/503/529, hangs, "
                          "truncated and malformed bodies")
    sim.add_argument("--retry-after", type=float, dest="retry_after",
                     help="seconds an injected 429 asks the client to wait")
    sim.add_argument("--hang-seconds", type=float, dest="hang_seconds",
                     help="how long an injected hang stalls before dropping the connection")
    sim.add_argument("--providers", type=_provider_list,
                     help="comma-separated providers assigned to the sources round-robin "
                          f"(default: all of {','.join(PROVIDERS)})")
    sim.add_argument("--latency", type=float, help="extra seconds before every API answer")
    sim.add_argument("--vanish-share", type=float, dest="vanish_share",
                     help="share of batches (0-1) that answer 404 and leave the list after they end")
    sim.add_argument("--vanish-after", type=float, dest="vanish_after",
                     help="simulated seconds after its end that such a batch vanishes (default 3600)")
    sim.add_argument("--vanish-active", type=float, dest="vanish_active",
                     help="share of the vanishing batches (0-1) that vanish half-way through their "
                          "life instead, while still active")
    sim.add_argument("--malformed", type=int,
                     help="batches (fleet-wide, chosen by the seed) served as objects the normaliser "
                          "rejects, inside valid list pages; listed in the ground truth")
    sim.add_argument("--hostile", type=int,
                     help="hostile payloads served (truncated JSON, bad UTF-8, NaN, 10 MB bodies, deep "
                          "nesting, wrong types, huge metadata): objects inside list pages and whole "
                          "response bodies; counted in the ground truth")
    sim.add_argument("--creation-span", type=float, dest="creation_span",
                     help="simulated hours over which the batches are created, half before start (default 4)")
    sim.add_argument("--history", type=int,
                     help="batches per source created 2-30 simulated days earlier: terminal history "
                          "at the back of the list (default 0)")


def _provider_list(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(set(names) - set(PROVIDERS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown provider(s) {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {','.join(PROVIDERS)}")
    return names


def _seconds(text: str) -> float:
    """A timeout argument: a finite number of seconds, more than 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 3600:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 seconds, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config, secrets=SECRETS[args.command])
        setup_logging(settings.pipeline.log_level)
        return COMMANDS[args.command](settings, args)
    except ConfigError as exc:
        print(f"batchscope: config error: {exc}", file=sys.stderr)
        return 2
    except BatchscopeError as exc:
        print(f"batchscope: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from agents.runner import run

    return run(settings)


def cmd_poll(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.kafka import ensure_topics
    from pipeline.polling.metrics import REPORT_EVERY, report_every
    from pipeline.polling.service import Polling

    if not settings.sources:
        raise ConfigError("sources: none configured; 'poll' needs at least one [[sources]] table")

    async def go() -> None:
        await ensure_topics(settings.kafka)
        polling = Polling(settings, settings.sources)
        await polling.start()
        _on_signals(polling.poller.stop)
        report = asyncio.create_task(report_every(REPORT_EVERY, polling.poller.summary))
        try:
            await polling.finished()
        finally:
            report.cancel()
            await polling.stop()

    asyncio.run(go())
    return 0


def cmd_webhooks(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.webhooks.receiver import serve

    if not any(s.webhooks for s in settings.sources):
        raise ConfigError("sources: none has webhook_secret_env or webhook_secret_file; 'webhooks' "
                          "needs at least one")
    asyncio.run(serve(settings, _on_signals))
    return 0


def _agent_list(text: str) -> list[str]:
    from agents.app import AGENTS

    names = [a.strip() for a in text.split(",") if a.strip()]
    unknown = sorted(set(names) - set(AGENTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown agent(s) {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {','.join(AGENTS)}")
    return names


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from agents.worker import serve

    return serve(settings, args.agents)


def cmd_alerts(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.alerts.service import send_test, service_of
    from pipeline.polling.metrics import REPORT_EVERY, MetricsServer, report_every, start_metrics

    if args.action == "test":
        if not args.rule:
            raise ConfigError("alerts test: name the rule to test (batchscope alerts test RULE)")
        failure = asyncio.run(send_test(settings, args.rule))
        if failure is not None:
            raise BatchscopeError(f"alerts test: {args.rule}: not delivered: {failure}")
        print(f"alerts test: {args.rule}: delivered a sample alert")
        return 0
    if args.rule:
        raise ConfigError(f"alerts: unexpected argument {args.rule!r} (did you mean 'alerts test RULE'?)")
    service = service_of(settings)
    p = settings.pipeline
    server = MetricsServer(p.metrics_host, p.metrics_port, service.counts.exposition)

    async def go() -> None:
        stop = asyncio.Event()
        _on_signals(stop.set)
        await start_metrics(server)
        report = asyncio.create_task(report_every(REPORT_EVERY, service.counts.line))
        try:
            await service.run(stop)
        finally:
            report.cancel()
            await server.stop()

    asyncio.run(go())
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.clickhouse import spend

    spend.all_prices(settings)  # a bad price file stops here, before any table changes
    store = Store.from_settings(settings)
    try:
        applied = store.migrate()
        loaded = spend.load(store, settings)
    finally:
        store.close()
    print(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "up to date")
    print(loaded.line())
    return 0


def cmd_prices(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.clickhouse import spend

    if args.action == "check":
        prices = spend.all_prices(settings)
        override = sum(p.origin == "override" for p in prices)
        print(f"ok: {len(prices) - override} shipped and {override} override price row(s)")
        return 0
    store = Store.from_settings(settings)
    try:
        loaded = spend.load(store, settings)
    finally:
        store.close()
    print(loaded.line())
    return 0


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.kafka import SHOWN_CONFIGS, describe_topics, ensure_topics, topic_specs

    async def go() -> list[tuple[object, ...]]:
        if not args.describe:
            await ensure_topics(settings.kafka, changelog=True)
        names = [s.name for s in topic_specs(settings.kafka, changelog=True)]
        return [(t.name, t.partitions, t.replication_factor,
                 *(t.configs.get(c, "") for c in SHOWN_CONFIGS))
                for t in await describe_topics(settings.kafka, names)]

    rows = asyncio.run(go())
    sys.stdout.write(table(QueryResult(("topic", "partitions", "replication", *SHOWN_CONFIGS), rows)))
    return 0


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    from batchscope.health import check, default_url

    url = args.url or default_url(settings.pipeline)
    status = check(url, args.timeout)
    print(f"ok: {url} answered HTTP {status}")
    return 0


def cmd_query(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.clickhouse.queries import parse_params, run_saved, run_sql, saved_queries

    params = parse_params(args.param)
    if args.saved and args.sql:
        raise ConfigError("query: give SQL or --saved NAME, not both")
    if args.saved:
        if args.write:
            raise ConfigError("query: saved queries are read-only; --write does not apply")
        result = run_saved(settings, args.saved, params)
    elif args.sql:
        result = run_sql(settings, args.sql, params=params, write=args.write)
    else:
        sys.stdout.write(saved_list(saved_queries().values()))
        return 0
    sys.stdout.write(render(result, args.format))
    return 0


def saved_list(queries: Iterable[SavedQuery]) -> str:
    """What ``batchscope query`` with no SQL prints: each saved query, what it answers, its defaults."""
    lines = ["saved queries (run one with: batchscope query --saved NAME [--param NAME=VALUE]):"]
    for q in queries:
        defaults = " ".join(f"{k}={v}" for k, v in q.defaults.items())
        lines.append(f"  {q.name:<20} {q.description}" + (f" (default: {defaults})" if defaults else ""))
    return "\n".join(lines) + "\n"


def cmd_normalise(settings: Settings, args: argparse.Namespace) -> int:
    """One provider object, a list response or a bare array on stdin; one snapshot per line out."""
    from pipeline.core.errors import InvalidRecord
    from pipeline.core.timeutil import iso_ms, utcnow
    from pipeline.providers import adapter

    observed_at = iso_ms(utcnow())
    try:
        body = orjson.loads(sys.stdin.buffer.read())
        provider = adapter(args.provider)
        lines = [provider.normalise(o, args.source, observed_at).to_json() + b"\n"
                 for o in provider.batch_objects(body)]
    except (orjson.JSONDecodeError, InvalidRecord) as exc:
        what = "not valid JSON: " if isinstance(exc, orjson.JSONDecodeError) else ""
        reason = str(exc).replace("\n", " ")
        print(f"batchscope: invalid input: {what}{reason}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(b"".join(lines))
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from pipeline.clickhouse import status
    from pipeline.clickhouse.queries import run_saved, run_sql

    fleet = status.collect(lambda sql: run_sql(settings, sql),
                           lambda name, params: run_saved(settings, name, params))
    sys.stdout.write(status.render(fleet))
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import replace

    from simulator.server import Simulator

    knobs = ("batches", "sources", "seed", "speed", "port", "fault_rate", "retry_after", "hang_seconds",
             "providers", "latency", "vanish_share", "vanish_after", "vanish_active", "malformed", "hostile",
             "creation_span", "history")
    overrides = {k: getattr(args, k) for k in knobs
                 if getattr(args, k) is not None}
    config = replace(settings.simulator, **overrides)
    secret = None
    if config.webhook_url:
        name = config.webhook_secret_env
        secret = os.environ.get(name) if name else None
        if not secret:
            raise ConfigError("simulator.webhook_secret_env: must name a set environment variable holding "
                              "the whsec_ secret the webhooks are signed with")

    async def go() -> None:
        stop = asyncio.Event()
        _on_signals(stop.set)
        async with Simulator(config, webhook_secret=secret) as sim:
            for name in sim.sources:
                list_path = sim.sources[name].adapter.list_path
                print(f"{name} ({sim.provider(name)}): {sim.source_url(name)}{list_path}", flush=True)
            print(f"ground truth: http://{config.host}:{sim.port}/_sim/truth (Ctrl-C stops)", flush=True)
            await stop.wait()

    asyncio.run(go())
    return 0


def _on_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, callback)


def render(result: QueryResult, fmt: str) -> str:
    if fmt == "json":
        rows = [dict(zip(result.columns, row, strict=True)) for row in result.plain_rows()]
        try:
            return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n"
        except orjson.JSONEncodeError as exc:  # e.g. arrays nested deeper than JSON output allows
            raise BatchscopeError(f"the result cannot be shown as JSON ({exc}); try --format table") from exc
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        return out.getvalue()
    return table(result)


def table(result: QueryResult) -> str:
    cells = [list(result.columns)] + [["NULL" if v is None else str(v) for v in row] for row in result.rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(result.columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"({len(result.rows)} row{'s' if len(result.rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


# The secrets each command reads when it loads its settings (docs/security.md, "Secrets: which
# command reads which"). A source's key only where sources are polled; the ClickHouse password only
# where ClickHouse may be opened (query and status open it when no pipeline serves the endpoint).
SECRETS: dict[str, Secrets] = {
    "run": (Secrets.SOURCE_KEYS | Secrets.CLICKHOUSE_PASSWORD | Secrets.WEBHOOK_SECRETS
            | Secrets.ALERT_SECRETS),
    "webhooks": Secrets.WEBHOOK_SECRETS,
    "poll": Secrets.SOURCE_KEYS,
    "worker": Secrets.CLICKHOUSE_PASSWORD,
    "migrate": Secrets.CLICKHOUSE_PASSWORD,
    "prices": Secrets.CLICKHOUSE_PASSWORD,
    "query": Secrets.CLICKHOUSE_PASSWORD,
    "status": Secrets.CLICKHOUSE_PASSWORD,
    "topics": Secrets.NONE,
    "health": Secrets.NONE,
    "normalise": Secrets.NONE,
    "simulate": Secrets.NONE,
    "alerts": Secrets.ALERT_SECRETS,
}

COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "run": cmd_run,
    "poll": cmd_poll,
    "webhooks": cmd_webhooks,
    "worker": cmd_worker,
    "migrate": cmd_migrate,
    "prices": cmd_prices,
    "topics": cmd_topics,
    "health": cmd_health,
    "query": cmd_query,
    "normalise": cmd_normalise,
    "status": cmd_status,
    "simulate": cmd_simulate,
    "alerts": cmd_alerts,
}

if __name__ == "__main__":
    raise SystemExit(main())
