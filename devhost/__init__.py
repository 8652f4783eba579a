"""The local Functions host: runs function_app.py unchanged, without Core Tools (never deployed).

    python -m devhost [--app-dir DIR] [--port N] [--settings FILE] [--no-auth] [--with-azurite]
    DevHost(app_dir, env=..., port=0, clock=...).start() / .stop()       # in-process, for tests

Emulated, reusing the real azure-functions library for indexing and trigger objects:
- startup like `func start`: local.settings.json Values become environment variables before
  function_app is imported (variables already set win; falls back to local.settings.sample.json);
  host.json extensions.http / queues / blobs options; %Setting% binding expressions;
- indexing like the Python worker: exactly one FunctionApp, `get_functions()`, raw bindings,
  one trigger per function; clear errors for import failures and unsupported bindings;
- httpTrigger: routePrefix, templates with {p}, {p:int|alpha|bool|guid|long|double}, {p?},
  {*rest}; methods (404 vs 405); auth levels with keys from the DevHost section of the settings
  (x-functions-key header or ?code=); 500 when the function raises;
- queueTrigger: batchSize / newBatchThreshold, concurrent invocations, visibilityTimeout between
  retries, poison queue after maxDequeueCount failures with the original body, undecodable
  messages to poison, back-off to maxPollingInterval when idle, 10 min lease with renewal;
- blobTrigger: container scanning for both source=LogsAndContainerScan and source=EventGrid,
  ETag receipts in azure-webjobs-hosts (once per blob version, across restarts),
  webjobs-blobtrigger-poison after poisonBlobThreshold (5) failures;
- timerTrigger: 6-field NCRONTAB or TimeSpan schedules, runOnStartup, IsPastDue for an occurrence
  missed while stopped (schedule status blob), injected clock;
- "Executing/Executed 'Functions.<name>'" log lines; graceful stop (bounded wait for running
  invocations, unfinished queue messages released visible at once).

Not emulated:
- no Event Grid subscription: EventGrid blob triggers are served by scanning (and so also fire
  for blobs that existed before the host started); blob failure counts reset on restart;
- no input/output bindings other than the http $return, no durable functions, no other triggers;
- single instance: no scale-out, no singleton/host locks, no dynamic concurrency;
- no function key management or admin APIs (/admin/...), no `func` host.json logging config,
  no functionTimeout enforcement, no retry policies (fixed/exponential) on triggers, no
  Application Insights; a `context` argument gets invocation_id/function_name/directory only;
- a timed-out invocation keeps running in its thread at shutdown (Python cannot kill threads):
  its message is released, and the process exits without waiting for it.
Note: `func start` does not check HTTP keys locally; this host does unless --no-auth.
"""
from __future__ import annotations

from devhost.clock import FakeClock, SystemClock
from devhost.config import DevHostError
from devhost.host import DevHost

__all__ = ["DevHost", "DevHostError", "FakeClock", "SystemClock"]
