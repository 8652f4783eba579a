"""The local Functions host: runs function_app.py unchanged, without Core Tools (never deployed).

    python -m devhost [--app-dir DIR] [--port N] [--settings FILE] [--no-auth] [--with-azurite] [--no-event-grid]
    DevHost(app_dir, env=..., port=0, clock=...).start() / .stop()       # in-process, for tests

Emulated, reusing the real azure-functions library for indexing and trigger objects:
- startup like `func start`: local.settings.json Values become environment variables before
  function_app is imported (variables already set win; falls back to local.settings.sample.json);
  host.json extensions.http / queues / blobs options; %Setting% binding expressions;
- indexing like the Python worker: exactly one FunctionApp, `get_functions()`, raw bindings,
  one trigger per function; the worker's annotation check (devhost/annotations.py); clear errors
  for import failures and unsupported bindings;
- httpTrigger (uvicorn, keep-alive; sync functions on 16 threads, async ones on the event loop, as the
  worker runs them; bodies over the host's 100 MB are 413): routePrefix, templates with {p},
  {p:int|alpha|bool|guid|long|double}, {p?}, {*rest}; a method the route does not allow is 404 as on
  the host; auth levels with keys from the DevHost section of the settings (x-functions-key header
  or ?code=); 500 when the function raises;
- queue output bindings (devhost/outputs.py): written after a success, waking this host's
  listener of the queue at once (SharedQueueWatcher);
- queueTrigger: batchSize / newBatchThreshold, concurrent invocations, visibilityTimeout between
  retries, poison queue after maxDequeueCount failures with the original body, undecodable
  messages to poison, back-off to maxPollingInterval when idle, 10 min lease with renewal;
- blobTrigger: source=EventGrid through the blobs extension webhook (/runtime/webhooks/blobs,
  the validation handshake, the blobs_extension key) and the host's blob trigger queue, fed by a
  local Event Grid that scans for new blob versions (devhost/eventgrid.py, blobqueue.py);
  source=LogsAndContainerScan by container scanning; ETag receipts in azure-webjobs-hosts (once
  per blob version, across restarts), webjobs-blobtrigger-poison after 5 failures; the worker's
  InputStream with blob properties and metadata, or an SDK type (the blob extension's BlobClient) made by
  the extension from a reference, with no download; maxDegreeOfParallelism;
- timerTrigger: 6-field NCRONTAB or TimeSpan schedules, runOnStartup, IsPastDue for an occurrence
  missed while stopped (schedule status blob; useMonitor off for sub-minute schedules), injected clock;
- "Executing/Executed 'Functions.<name>'" log lines (written in batches, devhost/console.py); graceful
  stop (bounded wait for running invocations, unfinished queue messages released visible at once).

Not emulated:
- no Event Grid service: the local one publishes BlobCreated only, with no filters, retries or
  dead-lettering (and also for blobs that existed before the first start); LogsAndContainerScan
  failure counts reset on restart;
- no input bindings, no output bindings other than queues and the http $return, no durable
  functions, no other triggers;
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
