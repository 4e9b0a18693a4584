"""The command line: ``gateway serve`` and the admin and evaluation commands.

    gateway serve [--config PATH] [--host H] [--port N]
    gateway tenants create|list|update ...      gateway keys create|list|revoke ...
    gateway migrate [--from-sqlite DATA_DIR]    (the shared database of [cluster])
    gateway routes check|fit|eval|build ...     gateway learn replay|eval ...

Every command reads the same configuration: the embedded default, with the file ``--config``
(or ``$GATEWAY_CONFIG``) laid over it and the ``GATEWAY_*`` variables over both; the admin
commands need only its store, not the providers' keys. A mistake on the command line, in the
configuration or in a command's input is one line on stderr and exit status 2 (1 when the
command itself failed), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NoReturn, cast
from urllib.parse import urlsplit

from aiohttp import web

from gateway.api.connections import GuardedRunner
from gateway.app import create_app
from gateway.cache import cli as cache_cli
from gateway.cache.entry_tokens import EntryTokens
from gateway.core import migrate_cli
from gateway.core.appkeys import LIFECYCLE
from gateway.core.config import LOG_LEVEL_VAR, Settings, env_value, load
from gateway.core.fd_limit import raise_open_files_limit
from gateway.core.postgres import STORAGE_ERRORS, DatabaseError
from gateway.core.processes import ChildLink, Supervisor, child_settings, processes_problem
from gateway.core.redact import install_redaction, redact
from gateway.core.toml_table import ConfigError
from gateway.observability.access_log import configure_access_log
from gateway.observability.node_metrics import socket_path
from gateway.pipeline.heap import settled_heap
from gateway.routing import cli as routing_cli
from gateway.routing.learned import cli as learn_cli
from gateway.tenants import cli as tenants_cli
from gateway.tenants.context import first_start

log = logging.getLogger("gateway")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None,
        help="TOML configuration file (default: the embedded default configuration)",
    )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``gateway: error: …``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.upper()


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of 1 or more, got {value!r}")
    return int(value)


def _port(value: str) -> int:
    if not value.isdecimal() or int(value) > 65535:  # as [server] port: 0 picks a free one
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {value!r}")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gateway", description="A self-hostable LLM gateway.")
    parser.add_argument("--log-level", default=None, type=_log_level,
                        help=f"logging level: DEBUG, INFO, WARNING, ERROR (default "
                             f"${LOG_LEVEL_VAR}, else INFO)")
    commands = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
                    parser.add_subparsers(dest="command", required=True))
    serve = commands.add_parser("serve", help="run the gateway")
    _add_config(serve)
    serve.add_argument("--host", help="address to listen on (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port to listen on (default from config: 8080)")
    serve.add_argument("--processes", type=_positive, help="gateway processes sharing the "
                       "port, under one supervisor (default from config: 1)")
    # Given by the supervisor to its children (gateway.core.processes), never by hand.
    serve.add_argument("--child-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--embedder-socket", type=Path, action="append", default=[],
                       help=argparse.SUPPRESS)
    serve.add_argument("--node-dir", type=Path, help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)
    tenants_cli.add_commands(commands, _add_config)
    routing_cli.add_commands(commands, _add_config)
    learn_cli.add_commands(commands, _add_config)
    cache_cli.add_commands(commands, _add_config)
    migrate_cli.add_commands(commands, _add_config)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load(args.config, providers_needed=getattr(args, "providers_needed", True))
    server = settings.server
    if getattr(args, "host", None):
        server = replace(server, host=args.host)
    if getattr(args, "port", None) is not None:
        server = replace(server, port=args.port)
    if getattr(args, "processes", None) is not None:
        server = replace(server, processes=args.processes)
    settings = replace(settings, server=server)
    if getattr(args, "child_index", None) is not None:
        settings = child_settings(settings, args.child_index, args.embedder_socket,
                                  args.node_dir)
    return settings


def _secrets(settings: Settings) -> list[str]:
    """Every secret the settings hold, so no log line can carry one."""
    values = [p.api_key for p in settings.providers]
    values += [settings.tenants.admin_key, settings.tenants.key_secret]
    values.append(settings.observability.metrics_token)
    for url in (settings.cluster.database_url, settings.cluster.redis_url):
        if url:  # the whole URL, and its password should a message quote only that
            values += [url, urlsplit(url).password]
    if (tracing := settings.observability.tracing) is not None:
        values += tracing.headers.values()
    return [v for v in values if v]


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, as one line with the fix; None when it can.

    Checked before anything is created (the first start prints keys once), so a busy port
    never costs an operator a key they then cannot use."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host!r}: {exc.strerror}; pass --host with a local address"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"port {port} on {host} is already in use (another gateway?): stop "
                        f"that process, or pass --port N (or [server] port) to use another")
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    link = (ChildLink(args.ready_fd, _secrets(settings)) if args.ready_fd is not None
            else None)
    # A child shares the port its siblings already listen on: the supervisor checked it.
    problem = None if link else port_problem(settings.server.host, settings.server.port)
    if problem is None and settings.server.processes > 1:
        problem = processes_problem(settings)
        if problem is None:
            return _supervise(args, settings)
    if problem is not None:
        print(f"gateway: {problem}", file=sys.stderr)
        return 1
    _install_uvloop()
    raise_open_files_limit(settings.server.max_connections)
    app = create_app(settings)
    app.cleanup_ctx.append(settled_heap)
    log.info("gateway starting (config: %s); models: %s", settings.source,
             ", ".join(sorted({m.name for m in settings.models})))
    for note in settings.provider_notes:
        log.info("%s", note)
    try:
        asyncio.run(_run(app, settings, link))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            log.exception("gateway stopped on an error")
        else:  # taken between the check above and the bind: the same one line
            server = settings.server
            problem = port_problem(server.host, server.port) or exc.strerror
            print(f"gateway: {problem}", file=sys.stderr)
        if link is not None:
            link.failed(str(problem if exc.errno == errno.EADDRINUSE else exc))
        return 1
    except Exception as exc:
        log.exception("gateway stopped on an error")
        if link is not None:
            link.failed(f"{type(exc).__name__}: {exc}")
        return 1
    return 0


_START_ERRORS: tuple[type[Exception], ...] = (DatabaseError, *STORAGE_ERRORS)


async def _first_start(settings: Settings) -> None:
    """What the processes of a node would otherwise race to do: the schema and the first keys,
    and the cache's key for entry names (made by whichever process came first)."""
    await first_start(settings)
    if settings.cache.enabled:
        EntryTokens.beside(settings.cache.database)


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """``processes`` > 1: start that many children on the port and watch them."""
    def command(index: int, ready_fd: int, sockets: Sequence[Path], node_dir: Path) -> list[str]:
        argv = [sys.executable, "-m", "gateway", "--log-level",
                logging.getLevelName(logging.getLogger().level), "serve"]
        if args.config is not None:
            argv += ["--config", str(args.config)]
        argv += ["--host", settings.server.host, "--port", str(settings.server.port),
                 "--child-index", str(index), "--ready-fd", str(ready_fd),
                 "--node-dir", str(node_dir)]
        for path in sockets:
            argv += ["--embedder-socket", str(path)]
        return argv

    log.info("gateway starting %d processes on %s:%d (config: %s)", settings.server.processes,
             settings.server.host, settings.server.port, settings.source)
    supervisor = Supervisor(settings, command)
    try:
        return asyncio.run(supervisor.run(lambda: _first_start(settings)))
    except _START_ERRORS as exc:  # the once-only start-up's stores
        print(f"gateway: start-up failed: {redact(str(exc), _secrets(settings))}",
              file=sys.stderr)
        return 1


async def _run(app: web.Application, settings: Settings, link: ChildLink | None) -> None:
    """Serve until SIGINT or SIGTERM, then drain and stop. Unlike ``web.run_app``, a start-up
    that fails part way still stops what had started (workers, threads, open files), so the
    process ends; and the stop runs while the app's own tasks still do."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if link is not None:
        link.watch_parent(loop, stop.set)
    server = settings.server
    runner = GuardedRunner(app, shutdown_timeout=_CANCEL_S, handler_cancellation=True,
                           access_log=None)
    try:
        await runner.setup()
        # A burst of connections beyond the default backlog (128) waits for the client's SYN
        # retry (a second or more); the kernel caps this at net.core.somaxconn.
        await web.TCPSite(runner, server.host, server.port, backlog=server.max_connections,
                          reuse_port=server.process_index is not None).start()
        for host, port, *_ in runner.addresses:
            log.info("gateway listening on http://%s:%d", host, port)
        if server.node_dir is not None and server.process_index is not None:
            # Where its siblings reach this very process (a scrape gathers the node's metrics).
            await web.UnixSite(runner, str(socket_path(server.node_dir,
                                                       server.process_index))).start()
        if link is not None:
            link.listening()
        await stop.wait()
        await _drain(runner, app, server.shutdown_grace_s)
    finally:
        await runner.cleanup()


_CANCEL_S = 0.2
"""After the deadline, what a handler still running gets to finish once cancelled."""


async def _drain(runner: web.AppRunner, app: web.Application, grace_s: float) -> None:
    """One deadline, ``grace_s`` from now: stop accepting, close idle connections, let the
    requests in flight finish; streams still running shortly before the deadline are cut with
    the in-stream error event, so they end (and are accounted) before it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    log.info("gateway draining: finishing requests in flight for up to %.1f s", grace_s)
    app[LIFECYCLE].drain(cut_at=deadline - min(0.5, grace_s / 4))
    for site in runner.sites:
        await site.stop()
    if runner.server is not None:
        runner.server.pre_shutdown()  # idle keep-alive connections close now, busy ones after
    if not await app[LIFECYCLE].wait_idle(deadline):
        log.warning("shutdown deadline reached with %d requests in flight; cancelling them",
                    app[LIFECYCLE].in_flight)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional on platforms without it
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = args.log_level or env_value(LOG_LEVEL_VAR) or "INFO"
    if level.upper() not in LOG_LEVELS:
        print(f"gateway: configuration error: {LOG_LEVEL_VAR}: expected one of "
              f"{', '.join(LOG_LEVELS)}, got {level!r}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    install_redaction(secrets=_secrets(settings))
    if settings.observability.access_log:
        configure_access_log()
    try:
        return int(args.handler(args, settings))
    except ConfigError as exc:  # a command's own input: a file, a flag's value
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gateway: error: {exc.filename or ''}{': ' if exc.filename else ''}"
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
