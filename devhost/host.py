"""DevHost: load settings, index the app, start the HTTP server and the trigger listeners; stop gracefully."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from devhost.blobqueue import Registration, SharedBlobQueueListener, blob_queue_options
from devhost.blobs import BLOB_SCAN_INTERVAL, BlobScanner, EventGridSource
from devhost.clock import Clock, SystemClock
from devhost.config import (
    DEFAULT_PORT,
    DevHostError,
    HostConfig,
    apply_values,
    load_host_json,
    load_local_settings,
)
from devhost.eventgrid import BLOBS_EXTENSION, WEBHOOK_PATH, BlobsWebhook, EventGridPublisher
from devhost.http import HttpHost
from devhost.index import FunctionSpec, Invoker, import_app, index
from devhost.outputs import OutputWriter, QueueWatcher
from devhost.queues import QueueListener
from devhost.timers import TimerRunner
from shared.errors import StorageUnreachable
from shared.settings import Settings
from shared.storage import AzureStorage, reset_process_state

log = logging.getLogger("devhost")

DEFAULT_CONNECTION = "AzureWebJobsStorage"
HOST_ID_SETTING = "AzureFunctionsWebHost__hostid"
Listener = QueueListener | BlobScanner | EventGridSource | TimerRunner
BLOBS_SYSTEM_KEY = f"{BLOBS_EXTENSION}_extension"  # the system key the blobs webhook takes
START_AZURITE = ("start Azurite: `make run` (starts it for you), `python -m devhost --with-azurite`, "
                 "or `npx azurite --location .azurite` in another terminal")


def _host_id(app_dir: Path) -> str:
    """Like the Functions host's id: lowercase, at most 32 characters, stable for one app."""
    if os.environ.get(HOST_ID_SETTING):
        return os.environ[HOST_ID_SETTING].lower()[:32]
    name = re.sub(r"[^a-z0-9]+", "-", app_dir.name.lower()).strip("-")[:23] or "app"
    return f"{name}-{hashlib.sha256(str(app_dir).encode()).hexdigest()[:8]}"


def _check_reachable(storage: AzureStorage, setting: str) -> None:
    for endpoint in (storage.blob_endpoint, storage.queue_endpoint):
        url = urlparse(endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname or "", port), timeout=3).close()
        except OSError as exc:
            raise DevHostError(f"storage is unreachable (setting={setting}, endpoint={endpoint}): {exc}. "
                               f"Locally, {START_AZURITE}.") from exc
    try:
        storage.ping()
    except StorageUnreachable as exc:
        raise DevHostError(f"storage (setting={setting}) does not answer: {exc.message}") from exc


class DevHost:
    """The local Functions host, usable in-process (tests) and from `python -m devhost`."""

    def __init__(
        self, app_dir: Path | str, *, env: Mapping[str, str] | None = None, port: int | None = None,
        bind: str = "127.0.0.1", settings_path: Path | None = None, auth: bool = True,
        clock: Clock | None = None, blob_scan_interval: float = BLOB_SCAN_INTERVAL, grace_seconds: float = 10.0,
        event_grid: bool = True,
    ) -> None:
        self.app_dir = Path(app_dir).resolve()
        self._env = dict(env or {})
        self._requested_port = port
        self._bind = bind
        self._settings_path = settings_path
        self._auth = auth
        self._clock = clock or SystemClock()
        self._scan_interval = blob_scan_interval
        self._grace = grace_seconds
        # EventGrid blob triggers: True publishes BlobCreated events from container scans (the local
        # stand-in for an Event Grid subscription); False leaves them to events POSTed to the webhook
        self._event_grid = event_grid
        self._publisher = EventGridPublisher(None)
        self._blob_queue: SharedBlobQueueListener | None = None
        self._invoker = Invoker(self.app_dir)
        self._storages: dict[str, AzureStorage] = {}
        self._listeners: list[Listener] = []
        self._http: HttpHost | None = None
        self._saved_env: dict[str, str] | None = None
        self._added_path = False
        self.functions: list[FunctionSpec] = []
        self.port = 0
        self.started_seconds = 0.0
        self.function_key: str | None = None  # a key that passes function level (None: auth off)
        # host-level system keys: DevHost.SystemKeys of the settings, blobs_extension generated if absent
        self.system_keys: dict[str, str] = {}
        self._generated_keys: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{self._bind}:{self.port}"

    def storage(self, setting: str = DEFAULT_CONNECTION) -> AzureStorage:
        """The gateway for a binding's connection setting (identity-based settings work too)."""
        if setting not in self._storages:
            suffixes = ("", "__accountName", "__blobServiceUri", "__queueServiceUri", "__clientId")
            env = {DEFAULT_CONNECTION + s: os.environ[setting + s] for s in suffixes if os.environ.get(setting + s)}
            if not env:
                raise DevHostError(f"connection setting {setting} is not set: add it to Values in "
                                   "local.settings.json (UseDevelopmentStorage=true for Azurite)")
            storage = AzureStorage.from_settings(Settings.from_env(env))
            _check_reachable(storage, setting)
            self._storages[setting] = storage
        return self._storages[setting]

    def start(self) -> DevHost:
        """Start everything; raises DevHostError (nothing left running) when the app cannot run."""
        started = time.monotonic()
        self._saved_env = dict(os.environ)
        try:
            self._start()
        except BaseException:
            self.stop(grace_seconds=0)
            raise
        self.started_seconds = time.monotonic() - started
        log.info("Host started (%d functions) in %.2fs", len(self.functions), self.started_seconds)
        return self

    def _start(self) -> None:
        settings = load_local_settings(self.app_dir, self._settings_path)
        os.environ.update(self._env)  # the caller's environment, like the shell's for func start
        apply_values(settings.values)
        reset_process_state()  # the app starts as in a new worker process: nothing cached from a former run
        config = load_host_json(self.app_dir)
        self._added_path = str(self.app_dir) not in sys.path
        self.functions = index(import_app(self.app_dir))
        if not self.functions:
            log.warning("No job functions found in %s", self.app_dir)
        http_specs = [s for s in self.functions if s.trigger_type == "httpTrigger"]
        self._init_blobs(settings.system_keys, config)
        self._init_listeners(config)
        webhooks = {BLOBS_EXTENSION: BlobsWebhook(self._blob_queue)} if self._blob_queue else {}
        self._http = HttpHost(http_specs, self._invoker, route_prefix=config.route_prefix,
                              function_keys=settings.function_keys, master_key=settings.master_key, auth=self._auth,
                              system_keys=self.system_keys, webhooks=webhooks)
        port = self._requested_port if self._requested_port is not None else (settings.port or DEFAULT_PORT)
        try:
            self.port = self._http.start(self._bind, port)
        except OSError as exc:
            raise DevHostError(f"cannot listen on {self._bind}:{port} ({exc}): pass another --port") from exc
        # Event Grid delivers to the webhook on this host's own HTTP server, listening from here on
        self._publisher.endpoint = f"{self._local_url}/{WEBHOOK_PATH}/{BLOBS_EXTENSION}"
        self._log_auth(settings.path, bool(settings.function_keys or settings.master_key))
        self._log_webhook(settings.path)
        if self._auth:
            self.function_key = next(iter(settings.function_keys.values()), settings.master_key)
        for listener in self._listeners:
            listener.start()
        self._print_functions()

    @property
    def _local_url(self) -> str:
        """Where this process reaches its own HTTP server."""
        host = "127.0.0.1" if self._bind in ("0.0.0.0", "::", "") else self._bind
        return f"http://{host}:{self.port}"

    def _init_blobs(self, configured_keys: Mapping[str, str], config: HostConfig) -> None:
        """System keys, and the host's blob trigger queue with its listener when the app has blob triggers."""
        self.system_keys, self._generated_keys = dict(configured_keys), []
        if BLOBS_SYSTEM_KEY not in self.system_keys:
            self.system_keys[BLOBS_SYSTEM_KEY] = secrets.token_urlsafe(32)
            self._generated_keys.append(BLOBS_SYSTEM_KEY)
        self._publisher = EventGridPublisher(self.system_keys[BLOBS_SYSTEM_KEY] if self._auth else None)
        if any(s.trigger_type == "blobTrigger" for s in self.functions):
            options = blob_queue_options(config.blobs_max_parallel, config.poison_blob_threshold,
                                         config.queues.message_encoding)
            self._blob_queue = SharedBlobQueueListener(self.storage(), _host_id(self.app_dir), options,
                                                       self._invoker, self._clock)
            self._listeners.append(self._blob_queue)

    def _init_listeners(self, config: HostConfig) -> None:
        """A listener per non-HTTP trigger; output bindings wake this host's listener of their queue."""
        watcher = QueueWatcher()
        self._invoker.outputs = OutputWriter(self.storage, config.queues.message_encoding, watcher)
        for spec in self.functions:
            poller = self._listener_for(spec, config)
            if poller is not None:
                self._listeners.append(poller)
            if isinstance(poller, QueueListener):
                watcher.register(poller.queue, poller.notify)

    def _listener_for(self, spec: FunctionSpec, config: HostConfig) -> Listener | None:
        """The poller for a non-HTTP trigger (None for HTTP, which the HttpHost serves)."""
        conn = str(spec.trigger.get("connection") or DEFAULT_CONNECTION)
        if spec.trigger_type == "queueTrigger":
            return QueueListener(spec, self.storage(conn), config.queues, self._invoker, self._clock)
        if spec.trigger_type == "blobTrigger":
            return self._blob_listener(spec, self.storage(conn), config)
        if spec.trigger_type == "timerTrigger":
            return TimerRunner(spec, self.storage(), _host_id(self.app_dir), self._invoker, self._clock)
        return None

    def _blob_listener(self, spec: FunctionSpec, storage: AzureStorage, config: HostConfig) -> Listener | None:
        """EventGrid source: the local Event Grid (or nothing); LogsAndContainerScan: the scanner invoking it."""
        host_id = _host_id(self.app_dir)
        source: EventGridSource | BlobScanner
        if spec.trigger.get("source") == "EventGrid":
            source = EventGridSource(spec, storage, self.storage(), host_id, interval=self._scan_interval,
                                     clock=self._clock, publisher=self._publisher)
            listener: Listener | None = source if self._event_grid else None
        else:
            source = listener = BlobScanner(
                spec, storage, self.storage(), host_id, poison_threshold=config.poison_blob_threshold,
                interval=self._scan_interval, invoker=self._invoker, clock=self._clock,
                message_encoding=config.queues.message_encoding, max_parallel=config.blobs_max_parallel)
        if self._blob_queue is not None:  # the host registers every blob trigger with its queue listener
            self._blob_queue.register(Registration(spec, storage, source.pattern, source.source))
        return listener

    def _log_auth(self, path: Path | None, have_keys: bool) -> None:
        if not self._auth:
            log.warning("HTTP auth: OFF (--no-auth): every HTTP function is served as anonymous")
        elif have_keys:
            log.info("HTTP auth: keys enforced (function and admin levels; keys from DevHost in %s)", path)
        else:
            log.warning("HTTP auth: keys enforced but no DevHost.FunctionKeys/MasterKey in %s: function and "
                        "admin level routes answer 401 (use --no-auth)", path)

    def _log_webhook(self, path: Path | None) -> None:
        """How to deliver Event Grid events by hand (or from a real subscription through a tunnel)."""
        if not any(s.trigger.get("source") == "EventGrid" for s in self.functions):
            return
        where = ("events from container scans (local Event Grid)" if self._event_grid
                 else "local Event Grid off: only events POSTed here")
        log.info("Event Grid blob triggers (%s): POST %s/%s/%s?functionName=Host.Functions.<name> with header "
                 "aeg-event-type: Notification", where, self._local_url, WEBHOOK_PATH, BLOBS_EXTENSION)
        if not self._auth:
            log.info("  blobs webhook key: none needed (--no-auth)")
        elif BLOBS_SYSTEM_KEY in self._generated_keys:
            log.info("  blobs webhook key: ?code= or x-functions-key with DevHost.MasterKey, or set "
                     "DevHost.SystemKeys.%s in %s (this run generated a random one)", BLOBS_SYSTEM_KEY, path)
        else:
            log.info("  blobs webhook key: ?code= or x-functions-key with DevHost.SystemKeys.%s (or "
                     "DevHost.MasterKey) from %s", BLOBS_SYSTEM_KEY, path)

    def _print_functions(self) -> None:
        lines = ["", "Functions:", ""]
        routes = {r.spec.name: r for r in self._http.routes} if self._http else {}
        for spec in self.functions:
            route = routes.get(spec.name)
            if route:
                methods = ",".join(sorted(route.methods)) if route.methods else "ALL"
                lines.append(f"  {spec.name}: [{methods}] {self.url}/{route.path}")
            elif spec.trigger.get("source") == "EventGrid":
                lines.append(f"  {spec.name}: {spec.trigger_type} (EventGrid) "
                             f"[POST] {self.url}/{WEBHOOK_PATH}/{BLOBS_EXTENSION}?functionName={spec.function_id}")
            else:
                lines.append(f"  {spec.name}: {spec.trigger_type}")
        print("\n".join(lines) + "\n", flush=True)

    def stop(self, grace_seconds: float | None = None) -> None:
        """Stop polling and HTTP, wait for in-flight invocations (bounded), release unfinished messages."""
        grace = self._grace if grace_seconds is None else grace_seconds
        if self._saved_env is None:
            return  # not running
        self._stop_event_sources()
        if self._http is not None:
            self._http.stop()
            self._http = None
        for listener in self._listeners:
            listener.stop_polling()
        self._drain(grace)
        for listener in self._listeners:
            if isinstance(listener, QueueListener):
                listener.release_unfinished()
        self._listeners = []
        self._blob_queue = None
        self._restore_process(self._saved_env)
        self._saved_env = None
        log.info("Host stopped")

    def _stop_event_sources(self) -> None:
        """The local Event Grid delivers over HTTP: stop it before the HTTP server."""
        for listener in self._listeners:
            if isinstance(listener, EventGridSource):
                listener.stop_polling()

    def _drain(self, grace: float) -> None:
        """Wait up to grace seconds for running invocations, and say so."""
        if self._invoker.inflight:
            log.info("Waiting up to %.1fs for %d running invocation(s)", grace, self._invoker.inflight)
        if not self._invoker.wait_idle(grace):
            log.warning("%d invocation(s) still running after %.1fs", self._invoker.inflight, grace)

    def _restore_process(self, saved_env: dict[str, str]) -> None:
        """Undo what start() did to the process: the environment and sys.path."""
        os.environ.clear()
        os.environ.update(saved_env)
        if self._added_path and str(self.app_dir) in sys.path:
            sys.path.remove(str(self.app_dir))

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
