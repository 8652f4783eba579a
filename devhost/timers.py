"""Timer triggers: 6-field NCRONTAB (seconds first) or TimeSpan, runOnStartup, past-due via a status blob."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.clock import Clock
from devhost.config import HOSTS_CONTAINER, DevHostError, parse_timespan, resolve
from devhost.index import FunctionSpec, Invoker
from devhost.loop import PollingLoop
from shared.errors import NotFound, PipelineError
from shared.storage import AzureStorage

log = logging.getLogger("devhost")


class Schedule:
    """An NCRONTAB expression ("{second} {minute} {hour} {day} {month} {day-of-week}") or a TimeSpan."""

    def __init__(self, expression: str, where: str) -> None:
        self.expression = expression
        self._interval: float | None = None
        if len(expression.split()) == 6 and croniter.is_valid(expression, second_at_beginning=True):
            return
        try:
            self._interval = parse_timespan(expression, "schedule")
        except DevHostError:
            raise DevHostError(f"{where}: schedule {expression!r} is neither a 6-field NCRONTAB "
                               "expression (seconds first) nor a TimeSpan") from None

    def sub_minute(self, now: datetime) -> bool:
        """More frequent than once a minute, by the host's rule (TimerSchedule.ShouldDisableScheduleMonitor).

        TimeSpan: shorter than a minute. NCRONTAB: minute and every higher field are `*` and more than
        one occurrence falls in the next minute (`*/10 * * * * *` yes; `0 * * * * *`, `* 1-5 * * * *` no).
        """
        if self._interval is not None:
            return self._interval < 60
        if any(f != "*" for f in self.expression.split()[1:]):
            return False
        end = now + timedelta(minutes=1)
        first = self.next_after(now)
        return first < end and self.next_after(first) < end

    def next_after(self, moment: datetime) -> datetime:
        if self._interval is not None:
            return moment + timedelta(seconds=self._interval)
        return croniter(self.expression, moment, second_at_beginning=True, ret_type=datetime).get_next(datetime)


def use_monitor(configured: object, schedule: Schedule, now: datetime) -> bool:
    """The host's UseMonitor: as configured (default true), but off for schedules more frequent than a minute.

    TimerSchedule.Create (Azure/azure-webjobs-sdk-extensions,
    src/WebJobs.Extensions/Extensions/Timers/Scheduling/TimerSchedule.cs) turns
    UseMonitor off for such schedules whatever the binding says; useMonitor false always stays off.
    """
    wanted = True if configured is None else str(configured).lower() not in ("false", "0")
    if wanted and schedule.sub_minute(now):
        log.debug("UseMonitor changed to false based on schedule frequency.")
        return False
    return wanted


class TimerRunner(PollingLoop):
    """Fires one timer function on its schedule, using the injected clock."""

    def __init__(self, spec: FunctionSpec, hosts: AzureStorage, host_id: str, invoker: Invoker, clock: Clock) -> None:
        self.spec = spec
        self.schedule = Schedule(resolve(str(spec.trigger["schedule"]), f"function {spec.name} schedule"),
                                 f"function {spec.name}")
        self.run_on_startup = bool(spec.trigger.get("runOnStartup", False))
        self.use_monitor = use_monitor(spec.trigger.get("useMonitor"), self.schedule, clock.now())
        self._status_path = f"timers/{host_id}/{spec.function_id}/status"
        self._hosts, self._invoke, self._clock = hosts, invoker, clock
        self._init_loop(f"timer-{spec.name}")


    def _status(self) -> dict[str, str] | None:
        if not self.use_monitor:
            return None
        try:
            return dict(self._hosts.read_json(HOSTS_CONTAINER, self._status_path)[0])
        except (NotFound, ValueError):
            return None
        except PipelineError as exc:
            log.warning("timer %s: could not read schedule status: %s", self.spec.name, exc)
            return None

    def _fire(self, past_due: bool, last: datetime | None, nxt: datetime) -> datetime:
        now = self._clock.now()
        status = {"Last": (last or now).isoformat(), "Next": nxt.isoformat(), "LastUpdated": now.isoformat()}
        request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
        try:
            self._invoke(self.spec, f"Timer fired at {now.isoformat()}", request)
        except Exception:
            pass  # the Functions host does not retry a failed timer run; the next occurrence fires
        return now

    def _record(self, last: datetime | None, nxt: datetime) -> None:
        if not self.use_monitor:
            return
        now = self._clock.now()
        status = {"Last": (last or now).isoformat(), "Next": nxt.isoformat(), "LastUpdated": now.isoformat()}
        try:
            self._hosts.write_json(HOSTS_CONTAINER, self._status_path, status)
        except PipelineError as exc:
            log.warning("timer %s: could not record schedule status: %s", self.spec.name, exc)

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("timer %s stopped firing after an unexpected error", self.spec.name)

    def _loop(self) -> None:
        status = self._status() or {}
        last = datetime.fromisoformat(status["Last"]) if status.get("Last") else None
        recorded_next = datetime.fromisoformat(status["Next"]) if status.get("Next") else None
        nxt = self.schedule.next_after(self._clock.now())
        missed = recorded_next is not None and recorded_next < self._clock.now()
        if missed or self.run_on_startup:
            # the Functions host runs an occurrence missed while it was down at startup with
            # IsPastDue=true; runOnStartup functions run once at startup either way
            last = self._fire(missed, last, nxt)
        self._record(last, nxt)
        log.info("timer %s: next occurrence %s (schedule %s)", self.spec.name, nxt.isoformat(),
                 self.schedule.expression)
        while not self._stop.is_set():
            left = (nxt - self._clock.now()).total_seconds()
            if left > 0:
                self._clock.wait(self._stop, left)
                continue
            last = self._fire(False, last, self.schedule.next_after(nxt))
            nxt = self.schedule.next_after(self._clock.now())
            self._record(last, nxt)
