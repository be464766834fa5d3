"""The emulated stack: the real Google client libraries against local emulators.

``stack up`` starts the Firestore, Pub/Sub and Cloud Storage emulators (detached, in their
own process groups), creates the topics and push subscriptions (dead-letter topics, max
delivery attempts) pointing at the functions served locally by functions-framework, and
starts the exit-monitor worker; it records every process in ``<var>/stack/stack.json``.
``stack down`` kills those process groups. ``stack restart NAME`` starts one of them again
(the worker, or a function) as Cloud Run restarts a crashed instance: same command, port
and environment, a new process group recorded in ``stack.json``. ``stack run`` replays the
same scenario as ``prometheus-trader run`` on the emulators and must give the same ledger.

How ``stack run`` stays deterministic: the functions are served in this process (a
functions-framework app per function, behind real Pub/Sub push subscriptions over HTTP),
so they share the simulated clock and the replay exchange with the driver; every
subscription is ordered (signals in publish order, executions and events per user), and
after each step the driver waits until every published message has been handled
(:class:`~prometheus_trader.app.quiescence.CountingBus`) before it moves the clock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.app.demo import DEMO_USERS
from prometheus_trader.app.emulators import (
    DEFAULT_PROJECT,
    LOOPBACK,
    EmulatorStack,
    free_port,
    kill_group,
)
from prometheus_trader.app.pipeline import Progress, run_pipeline
from prometheus_trader.app.quiescence import CountingBus
from prometheus_trader.app.settings import Settings
from prometheus_trader.app.wiring import (
    Adapters,
    Runtime,
    UseCases,
    replay_exchange,
    run_outbox_and_secrets,
    wire_adapters,
)
from prometheus_trader.ports import BusMessage
from prometheus_trader.sample import SAMPLE_START_MS
from prometheus_trader.usecases.names import Subscriptions, Topics

log = logging.getLogger(__name__)
REPO_FUNCTIONS = Path(__file__).resolve().parents[3] / "functions"
# function name → (topic it consumes, its subscription); the HTTP ones have no topic
PUBSUB_FUNCTIONS: dict[str, tuple[str, str]] = {
    "dispatcher": (Topics.SIGNALS, Subscriptions.DISPATCHER),
    "executor": (Topics.EXECUTIONS, Subscriptions.EXECUTOR),
    "evaluator": (Topics.EVENTS, Subscriptions.EVALUATOR),
    "notifier": (Topics.EVENTS, Subscriptions.NOTIFIER),
}
HTTP_FUNCTIONS = ("collector", "ranker", "reporter", "housekeeping", "api", "telegram")


class StackError(RuntimeError):
    """The stack cannot do what was asked (not up, already up, functions missing)."""


class StackInfo(BaseModel):
    """What ``stack up`` started: written to ``<var>/stack/stack.json``."""

    project: str
    env: dict[str, str]
    process_groups: dict[str, int]
    function_urls: dict[str, str]
    started_at: str
    restarts: dict[str, int] = {}


def stack_dir(settings: Settings) -> Path:
    """Where the stack keeps its state and logs."""
    return settings.var_dir / "stack"


def functions_dir() -> Path:
    """The repository's ``functions/`` folder (the stack serves them from source)."""
    if not (REPO_FUNCTIONS / "executor" / "main.py").exists():
        raise StackError(f"function sources not found under {REPO_FUNCTIONS}")
    return REPO_FUNCTIONS


def read_info(settings: Settings) -> StackInfo | None:
    """The running stack's record, None when no stack is up."""
    path = stack_dir(settings) / "stack.json"
    if not path.exists():
        return None
    return StackInfo.model_validate_json(path.read_text())


# ----------------------------------------------------------------------- up / down
def seed_demo(settings: Settings, env: dict[str, str], project: str, bucket: str) -> int:
    """The demo users into Firestore and the bundled sample into the bucket's replay prefix
    (what the functions' replay exchange reads); returns how many files were uploaded."""
    from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore
    from prometheus_trader.adapters.gcp.gcs_blob_store import GcsBlobStore
    from prometheus_trader.sample import SAMPLE_STORE_DIR
    from prometheus_trader.usecases.names import Collections

    with _environment(env):
        state = FirestoreStateStore(project=project, prefix=settings.state_prefix)
        try:
            for user in DEMO_USERS:
                state.create(Collections.USERS, user.user_id, user.model_dump(mode="json"))
        finally:
            state.close()
        blobs = GcsBlobStore(bucket)
        files = sorted(SAMPLE_STORE_DIR.rglob("*.parquet"))
        for path in files:
            key = f"{settings.replay_source_prefix}/{path.relative_to(SAMPLE_STORE_DIR).as_posix()}"
            blobs.put(key, path.read_bytes())
    return len(files)


def stack_up(
    settings: Settings, say: Callable[[str], None] = print, *, seed: bool = False
) -> StackInfo:
    """Start emulators, functions and the worker in the background; record them. ``seed``
    loads the demo users and the bundled sample, and pins the services' clock to it."""
    if read_info(settings) is not None:
        raise StackError("a stack is already up: `prometheus-trader stack down` first")
    root = stack_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    project = settings.gcp_project or DEFAULT_PROJECT
    say("starting emulators (Firestore, Pub/Sub, Cloud Storage) on 127.0.0.1 ...")
    emulators = EmulatorStack(root / "emulators", project=project, detached=True).start()
    groups = {name: e.process.pid for name, e in emulators.running.items()}
    try:
        env = {
            **emulators.env(),
            "PROMETHEUS_BACKEND": "gcp",
            "PROMETHEUS_GCP_PROJECT": project,
            "PROMETHEUS_BLOB_BUCKET": "prometheus-local",
            "PROMETHEUS_MARKET_BUCKET": "prometheus-local",
            "PROMETHEUS_VAR_DIR": str(settings.var_dir.resolve()),
        }
        _ensure_bucket(env, "prometheus-local")
        # the caller's own PROMETHEUS_* settings are the stack's: recorded, so that
        # `stack restart` from another shell starts a process configured the same way
        env = {
            **{k: v for k, v in os.environ.items() if k.startswith("PROMETHEUS_")},
            **env,
        }
        if seed:
            uploaded = seed_demo(settings, env, project, "prometheus-local")
            # the services replay the sample from the end of its warm-up, at real speed
            # (or settings.clock_speed times faster); one anchor for every process, so a
            # restarted worker reads the same time as the functions
            start = datetime.fromtimestamp(SAMPLE_START_MS / 1000, UTC) + timedelta(
                hours=settings.warmup_hours
            )
            env["PROMETHEUS_CLOCK_START"] = start.isoformat()
            env["PROMETHEUS_CLOCK_ANCHOR"] = datetime.now(UTC).isoformat()
            env["PROMETHEUS_CLOCK_SPEED"] = repr(settings.clock_speed)
            say(f"  seeded {len(DEMO_USERS)} demo users and {uploaded} sample files")
        urls: dict[str, str] = {}
        for name in (*PUBSUB_FUNCTIONS, *HTTP_FUNCTIONS):
            port = free_port()
            groups[f"function:{name}"] = _start(f"function:{name}", port, env, root)
            urls[name] = f"http://{LOOPBACK}:{port}"
            say(f"  function {name:12s} {urls[name]}")
        _create_push_topology(env, project, urls)
        worker_port = free_port()
        groups["worker"] = _start("worker", worker_port, env, root)
        urls["worker"] = f"http://{LOOPBACK}:{worker_port}"
        say(f"  worker       {urls['worker']}/healthz")
        for name, url in urls.items():
            _wait_listening(name, url, root)
    except BaseException:
        for pgid in groups.values():
            kill_group(pgid)
        raise
    info = StackInfo(
        project=project,
        env=env,
        process_groups=groups,
        function_urls=urls,
        started_at=datetime.now(UTC).isoformat(),
    )
    (root / "stack.json").write_text(info.model_dump_json(indent=2))
    if not seed:
        say(
            "the stack starts empty: `prometheus-trader stack down` then `prometheus-trader "
            "stack up --seed-demo` loads the demo users and the bundled sample (or add users "
            f"through the api function, {urls['api']}/api/v1)"
        )
    say(f"stack up; logs in {root}; stop it with `prometheus-trader stack down`")
    return info


def stack_down(settings: Settings) -> list[str]:
    """Kill every process group the stack started; returns their names."""
    info = read_info(settings)
    if info is None:
        return []
    for pgid in info.process_groups.values():
        kill_group(pgid)
    (stack_dir(settings) / "stack.json").unlink()
    return sorted(info.process_groups)


def restart(settings: Settings, name: str, *, wait: bool = True) -> int:
    """Start the stack's process ``name`` (``worker`` or ``function:<name>``) again, as
    Cloud Run replaces a crashed instance: same command, port and environment; a live one
    is killed first. Records the new process group; returns it (= the process id)."""
    info = read_info(settings)
    if info is None:
        raise StackError("no stack is up: `prometheus-trader stack up` first")
    if name not in info.process_groups or not (name == "worker" or name.startswith("function:")):
        known = sorted(n for n in info.process_groups if n == "worker" or ":" in n)
        raise StackError(f"no process {name!r} to restart; one of: {', '.join(known)}")
    kill_group(info.process_groups[name])
    url = info.function_urls[name.removeprefix("function:")]
    port = int(url.rsplit(":", 1)[1])
    root = stack_dir(settings)
    pid = _start(name, port, info.env, root)
    info.process_groups[name] = pid
    info.restarts[name] = info.restarts.get(name, 0) + 1
    # a new file then a rename: a concurrent reader never sees half a record
    tmp = root / f"stack.json.{os.getpid()}"
    tmp.write_text(info.model_dump_json(indent=2))
    tmp.replace(root / "stack.json")
    if wait:
        _wait_listening(name, url, root)
    return pid


def _start(name: str, port: int, env: dict[str, str], root: Path) -> int:
    """Spawn the worker or a function (its own process group), logging to ``root``."""
    if name == "worker":
        argv = [sys.executable, "-m", "prometheus_trader", "worker"]
        return _spawn(argv, {**env, "PORT": str(port)}, root / "worker.log")
    function = name.removeprefix("function:")
    signature = "cloudevent" if function in PUBSUB_FUNCTIONS else "http"
    argv = [
        sys.executable,
        "-m",
        "functions_framework",
        f"--target={function}",
        f"--source={functions_dir() / function / 'main.py'}",
        f"--signature-type={signature}",
        f"--host={LOOPBACK}",
        f"--port={port}",
    ]
    return _spawn(argv, env, root / f"function-{function}.log")


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> int:
    # append: a restarted process's log follows the one it replaces
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process.pid


def _wait_listening(name: str, url: str, logs: Path, timeout: float = 60.0) -> None:
    """Block until ``url``'s port accepts connections (the process is serving)."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
            return
        time.sleep(0.2)
    raise StackError(f"{name} is not listening on {url} after {timeout:.0f} s; see {logs}")


def _ensure_bucket(env: dict[str, str], bucket: str) -> None:
    from prometheus_trader.adapters.gcp.gcs_blob_store import GcsBlobStore

    with _environment(env):
        GcsBlobStore.ensure_bucket(bucket)


def _create_push_topology(env: dict[str, str], project: str, urls: dict[str, str]) -> None:
    from prometheus_trader.adapters.gcp.pubsub_bus import PubSubBus

    with _environment(env):
        bus = PubSubBus(project)
        try:
            for name, (topic, subscription) in PUBSUB_FUNCTIONS.items():
                # unordered: the Pub/Sub emulator never dead-letters ordered subscriptions
                bus.ensure_subscription(topic, subscription, urls[name], ordered=False)
        finally:
            bus.close()


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------- run
class _Handles:
    def __init__(self, handle: Callable[[BusMessage], None]) -> None:
        self.handle = handle


class StackFunctions:
    """What ``functions/*/main.py`` reach through ``get_runtime()`` during ``stack run``:
    the run's own use-cases, each counted for the quiescence wait."""

    def __init__(self, bus: CountingBus, usecases: UseCases) -> None:
        handlers = usecases.handlers()

        def counted(name: str) -> Callable[[BusMessage], None]:
            topic, subscription = PUBSUB_FUNCTIONS[name]
            return bus.counted(subscription, handlers[(topic, subscription)])

        self.dispatcher = _Handles(counted("dispatcher"))
        self.evaluator = _Handles(counted("evaluator"))
        self.notify = _Handles(counted("notifier"))
        self._execute = counted("executor")

    def execute(self, message: BusMessage) -> None:
        """The executor function's entry."""
        self._execute(message)

    def close(self) -> None:
        """Nothing to release: the run owns the adapters."""


@dataclass
class _Server:
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


def _serve_functions() -> tuple[_Server, dict[str, str]]:
    """Serve the Pub/Sub functions' main.py (functions-framework apps) on one port."""
    import functions_framework
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.serving import make_server

    apps = {
        f"/{name}": functions_framework.create_app(  # type: ignore[no-untyped-call]
            target=name,
            source=str(functions_dir() / name / "main.py"),
            signature_type="cloudevent",
        )
        for name in PUBSUB_FUNCTIONS
    }

    def not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such function"]

    port = free_port()
    # one request at a time: the functions share the run's replay exchange
    server = make_server(LOOPBACK, port, DispatcherMiddleware(not_found, apps), threaded=False)
    thread = threading.Thread(target=server.serve_forever, name="stack-functions", daemon=True)
    thread.start()
    # the trailing slash matters: Flask redirects /name to /name/ and Pub/Sub does not follow
    urls = {name: f"http://{LOOPBACK}:{port}/{name}/" for name in PUBSUB_FUNCTIONS}
    return _Server(server, thread), urls


def stack_runtime_factory(
    emulator_env: dict[str, str], project: str
) -> Callable[[Settings, int, Path], Runtime]:
    """A ``run_pipeline`` runtime factory over the emulators, one namespace per run."""

    def build(settings: Settings, start_ms: int, run_dir: Path) -> Runtime:
        from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore
        from prometheus_trader.adapters.gcp.gcs_blob_store import GcsBlobStore
        from prometheus_trader.adapters.gcp.gcs_market_store import GcsMarketStore
        from prometheus_trader.adapters.gcp.pubsub_bus import PubSubBus
        from prometheus_trader.app import cloud

        os.environ.update(emulator_env)
        run_id = f"run-{uuid.uuid4().hex[:10]}"
        bucket = f"prometheus-{run_id}"
        GcsBlobStore.ensure_bucket(bucket)
        clock = SimulatedClock(datetime.fromtimestamp(start_ms / 1000, UTC))
        source = DuckDBMarketStore(settings.data_dir, read_only=True)
        state = FirestoreStateStore(project=project, prefix=f"{run_id}-")
        exchange = replay_exchange(settings, source, clock, state)
        pubsub = PubSubBus(
            project,
            topic_prefix=f"{run_id}-",
            max_delivery_attempts=max(5, settings.max_delivery_attempts),
        )
        bus = CountingBus(pubsub)
        blobs = GcsBlobStore(bucket)
        market = GcsMarketStore(bucket, run_dir / "market-cache")
        # Secret Manager has no emulator: the run's secrets stay in the local file
        notifier, secrets = run_outbox_and_secrets(settings, run_dir)
        adapters = Adapters(
            clock=clock,
            source=source,
            exchange=exchange,
            market=market,
            state=state,
            bus=bus,
            blobs=blobs,
            notifier=notifier,
            secrets=secrets,
        )
        usecases = wire_adapters(settings, adapters)
        cloud.install_runtime(StackFunctions(bus, usecases))
        server, urls = _serve_functions()
        for name, (topic, subscription) in PUBSUB_FUNCTIONS.items():
            bus.track(topic, subscription)
            pubsub.ensure_subscription(topic, subscription, urls[name], ordered=True)

        def close() -> None:
            server.stop()
            cloud.reset_runtime()
            pubsub.close()
            state.close()

        return Runtime(
            settings=settings,
            adapters=adapters,
            usecases=usecases,
            settle=lambda: bus.wait_idle(timeout=300),
            dead_letters=lambda: 0,
            locate=lambda key: f"gs://{bucket}/{key}",
            closers=[source.close, market.close, close],
        )

    return build


def stack_run(settings: Settings, progress: Progress | None = None) -> dict[str, Any]:
    """The ``run`` scenario on the emulators (an up stack's, or its own for the run)."""
    info = read_info(settings)
    project = info.project if info else (settings.gcp_project or DEFAULT_PROJECT)
    own: EmulatorStack | None = None
    if info is None:
        own = EmulatorStack(stack_dir(settings) / f"run-emulators-{os.getpid()}", project=project)
        own.start()
        env = own.env()
    else:
        env = {k: v for k, v in info.env.items() if k.endswith("_HOST")}
        env["GOOGLE_CLOUD_PROJECT"] = project
    began = time.perf_counter()
    try:
        with _environment(env):
            summary = run_pipeline(
                settings,
                progress,
                stack_runtime_factory(env, project),
                run_fields={"backend": "emulated"},
            )
    finally:
        if own is not None:
            own.stop()
    log.info("stack run finished in %.1f s", time.perf_counter() - began)
    return summary
