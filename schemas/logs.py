"""Structured logging for every driftline process: one JSON object per line on stderr.

Secrets never reach the output: values under keys that name a secret are replaced, and
anything that looks like a URL with credentials has its password masked.

Repeats are limited (`RepeatLimiter`, configured by `LogRepeatSettings`): a stopped broker
makes aiokafka (faust's join agents) and librdkafka (the confluent-kafka clients, whose
lines come here through `librdkafka_callbacks`) log the same errors thousands of times a
minute. The operator gets one "Kafka connection lost" line naming the component and the
broker, a few of each error, one count of the rest per window, and one "Kafka connection
back" line.
"""

from __future__ import annotations

import atexit
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic with the settings, structlog at the first log line
    import structlog

    from schemas.settings import LogRepeatSettings

_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|dsn|sasl)", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@\s]+@", re.IGNORECASE)
REDACTED = "**********"


def redact_text(text: str) -> str:
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)


def _redacted(key: object, value: Any) -> Any:
    if isinstance(key, str) and _SECRET_KEYS.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redacted(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_redacted(None, v) for v in value]
    return value


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last before rendering, so that nested values and formatted tracebacks are covered."""
    for key, value in event.items():
        event[key] = _redacted(key, value)
    return event


_GENERATED = "_driftline_generated"  # a record the limiter made: never limited again
# Fields of the limiter's own records that reach the JSON line (other `extra`s do not).
_EXTRA_FIELDS = ["component", "broker", "retrying", "first_error", "down_seconds", "errors",
                 "repeated", "suppressed"]
# The Kafka clients' errors that mean "cannot reach the broker", by logger name (prefix).
_CONNECTION_ERRORS: dict[str, re.Pattern[str]] = {
    "aiokafka": re.compile(
        r"Unable connect|Unable to update metadata|NodeNotReady|KafkaConnectionError|Connect call failed"
        r"|Coordinator Request failed|coordinator dead|Heartbeat send request failed|HeartbeatRequest"),
    "librdkafka": re.compile(
        r"^(FAIL|ERROR): |^_TRANSPORT|^_ALL_BROKERS_DOWN|^_RESOLVE|^_TIMED_OUT|brokers are down"),
}
_ADDRESS = re.compile(
    r"\('(?P<host>[^']+)', (?P<port>\d+)\)"  # aiokafka: Connect call failed ('127.0.0.1', 9092)
    r"|(?P<host2>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:]+\]|[A-Za-z][\w-]*(?:\.[\w-]+)*):(?P<port2>\d{1,5})\b")
_THREAD_PREFIX = re.compile(r"^\[thrd:[^\]]*\]: ")  # librdkafka's thread name, not the broker
_TICK_SECONDS = 1.0  # how often due summaries and recovered connections are looked for


def _component(record: logging.LogRecord) -> str | None:
    """The Kafka client a record comes from, when it says that client cannot reach a broker."""
    if record.levelno < logging.WARNING:
        return None
    for prefix, pattern in _CONNECTION_ERRORS.items():
        if record.name == prefix or record.name.startswith(prefix + "."):
            if pattern.search(record.getMessage()):
                return "faust join agents (aiokafka)" if prefix == "aiokafka" else record.name
    return None


def _broker(text: str) -> str | None:
    match = _ADDRESS.search(text)
    if match is None:
        return None
    if match["host"] is not None:
        return f"{match['host']}:{match['port']}"
    return f"{match['host2']}:{match['port2']}"


def broker_reachable(broker: str, timeout: float = 1.0) -> bool:
    """Whether `host:port` accepts a TCP connection (the "back" line's evidence)."""
    host, _, port = broker.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _template(record: logging.LogRecord) -> str:
    """The message before its arguments: structlog's event, or the %-format string."""
    if isinstance(record.msg, dict):
        return str(record.msg.get("event", ""))
    return str(record.msg)


@dataclass
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0
    level: int = logging.NOTSET  # the highest level suppressed


@dataclass
class _Outage:
    broker: str | None
    since: float
    last_error: float
    first_error: str
    errors: int = 1


class RepeatLimiter(logging.Filter):
    """A handler's filter: per logger name and message template, `limit` records of
    `min_level` and above pass per window of `window_seconds`; the rest are counted and
    reported in one record when the window ends. Kafka connection errors also open an
    outage per component: one "lost" record when it starts, one "back" record when the
    broker accepts connections again and the component has logged no connection error for
    `recovered_after_seconds`. `tick` (every second, on a daemon thread, in a process set up
    by `configure_logging`) reports ended windows and outages; the clock and the probe are
    arguments so that tests need no sleeping and no broker."""

    def __init__(
        self, settings: LogRepeatSettings, emit: Callable[[logging.LogRecord], object] | None = None, *,
        clock: Callable[[], float] = time.monotonic, reachable: Callable[[str], bool] = broker_reachable,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.emit = emit
        self.clock = clock
        self.reachable = reachable
        self.min_level = logging.getLevelNamesMapping()[settings.min_level]
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}
        self._outages: dict[str, _Outage] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _GENERATED, False) or record.levelno < self.min_level:
            return True
        now = self.clock()
        component = _component(record)
        key = (record.name, _template(record))
        out: list[logging.LogRecord] = []
        with self._lock:
            if component is not None:
                out.extend(self._connection_error(component, record, now))
            window = self._windows.get(key)
            if window is not None and now - window.start >= self.settings.window_seconds:
                out.extend(self._summary(key, window, now))
                window = None
            if window is None:
                window = self._windows[key] = _Window(now)
            passes = window.passed < self.settings.limit
            if passes:
                window.passed += 1
            else:
                window.suppressed += 1
                window.level = max(window.level, record.levelno)
        self._send(out)
        return passes

    def tick(self) -> None:
        """Reports the windows that ended with suppressed records (and forgets every ended
        window) and the outages that are over."""
        now = self.clock()
        out: list[logging.LogRecord] = []
        with self._lock:
            for key, window in list(self._windows.items()):
                if now - window.start >= self.settings.window_seconds:
                    out.extend(self._summary(key, window, now))
                    del self._windows[key]
            quiet = [(c, o) for c, o in self._outages.items()
                     if now - o.last_error >= self.settings.recovered_after_seconds]
        # Probing takes up to a second per broker: outside the lock, records keep flowing.
        for component, outage in quiet:
            if outage.broker is None or self.reachable(outage.broker):
                with self._lock:
                    if self._outages.get(component) is outage and now - outage.last_error >= \
                            self.settings.recovered_after_seconds:
                        del self._outages[component]
                        out.append(self._back(component, outage, self.clock()))
        self._send(out)

    def flush(self) -> None:
        """Reports every window with suppressed records now (at exit)."""
        now = self.clock()
        with self._lock:
            out = [r for key, window in self._windows.items() for r in self._summary(key, window, now)]
            self._windows.clear()
        self._send(out)

    def _connection_error(self, component: str, record: logging.LogRecord, now: float) -> list[logging.LogRecord]:
        message = record.getMessage()
        outage = self._outages.get(component)
        if outage is not None:
            outage.errors += 1
            outage.last_error = now
            outage.broker = outage.broker or _broker(message)
            return []
        outage = self._outages[component] = _Outage(_broker(message), now, now, message)
        return [_record(
            "kafka.connection", logging.WARNING, "Kafka connection lost: %s cannot reach broker %s, retrying",
            (component, outage.broker or "(unknown)"),
            component=component, broker=outage.broker, first_error=message,
            retrying=f"each repeated error is logged at most {self.settings.limit} times per "
                     f"{self.settings.window_seconds:g} s")]

    def _back(self, component: str, outage: _Outage, now: float) -> logging.LogRecord:
        return _record(
            "kafka.connection", logging.INFO, "Kafka connection back: %s reaches broker %s again",
            (component, outage.broker or "(unknown)"), component=component, broker=outage.broker,
            down_seconds=round(now - outage.since, 1), errors=outage.errors)

    def _summary(self, key: tuple[str, str], window: _Window, now: float) -> list[logging.LogRecord]:
        if not window.suppressed:
            return []
        seconds = min(self.settings.window_seconds, now - window.start)
        return [_record(key[0], window.level, "%d similar messages suppressed in the last %s s",
                        (window.suppressed, f"{seconds:.0f}"), repeated=key[1], suppressed=window.suppressed)]

    def _send(self, records: list[logging.LogRecord]) -> None:
        if self.emit is not None:
            for record in records:
                self.emit(record)


def _record(name: str, level: int, msg: str, args: tuple[Any, ...], **fields: Any) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 0, msg, args, None)
    record.__dict__.update(fields)
    setattr(record, _GENERATED, True)
    return record


class _Ticker(threading.Thread):
    def __init__(self, limiter: RepeatLimiter) -> None:
        super().__init__(name="driftline-log-limiter", daemon=True)
        self.limiter = limiter
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(_TICK_SECONDS):
            try:
                self.limiter.tick()
            except Exception:  # noqa: BLE001 - logging must never stop the process
                pass


_ticker: _Ticker | None = None


def _stop_ticker() -> None:
    global _ticker
    if _ticker is not None:
        _ticker.stopping.set()
        _ticker.limiter.flush()
        _ticker = None


atexit.register(_stop_ticker)  # after the handlers are set up: runs before logging's shutdown


class LibrdkafkaLog:
    """A confluent-kafka client's `logger` (librdkafka calls `log(level, "%s [%s] %s",
    facility, client, message)`) and `error_cb`: both become records of the
    `librdkafka.<component>` logger with the facility or error code in the template, so
    that they are limited per kind of message like every other logger's. An error that
    names no broker ("1/1 brokers are down") gets the client's `bootstrap` servers, so that
    the "connection lost" line says which cluster is away."""

    def __init__(self, component: str, bootstrap: str | None = None) -> None:
        self.logger = logging.getLogger(f"librdkafka.{component}")
        self.bootstrap = bootstrap

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        if len(args) == 3 and msg == "%s [%s] %s":
            facility, client, message = args
            message = _THREAD_PREFIX.sub("", str(message))
            self.logger.log(level, f"{facility}: %s (%s)", message, client)
        else:
            self.logger.log(level, msg, *args, **kwargs)

    def error(self, error: Any) -> None:
        """`error_cb`: librdkafka retries every error but a fatal one on its own."""
        name = error.name() if hasattr(error, "name") else type(error).__name__
        level = logging.CRITICAL if getattr(error, "fatal", lambda: False)() else logging.ERROR
        text = error.str() if hasattr(error, "str") else str(error)
        if self.bootstrap and _ADDRESS.search(text) is None:
            self.logger.log(level, f"{name}: %s (bootstrap %s)", text, self.bootstrap)
        else:
            self.logger.log(level, f"{name}: %s", text)


def librdkafka_callbacks(component: str, bootstrap: str | None = None) -> dict[str, Any]:
    """`logger` and `error_cb` of a confluent-kafka client's configuration
    (`{**kafka.client_config(), **librdkafka_callbacks("monitor"), ...}`): librdkafka's log
    lines and errors become records of the `librdkafka.<component>` logger, so they are JSON,
    redacted and limited per kind of message (`RepeatLimiter`) instead of raw lines on
    stderr, and a lost broker gives one "Kafka connection lost" line naming the component.
    They are delivered by the client's poll/consume/flush calls."""
    log = LibrdkafkaLog(component, bootstrap)
    return {"logger": log, "error_cb": log.error}


def configure_logging(level: str = "INFO", repeats: LogRepeatSettings | None = None) -> None:
    """Routes structlog and the standard library (faust, aiokafka) through one JSON renderer,
    with repeats limited as `repeats` (the settings' `log_repeats`) says."""
    import structlog

    from schemas.settings import LogRepeatSettings

    global _ticker
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(allow=_EXTRA_FIELDS)],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    _stop_ticker()
    limiter = RepeatLimiter(repeats or LogRepeatSettings(), handler.handle)
    handler.addFilter(limiter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _ticker = _Ticker(limiter)
    _ticker.start()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return _Logger(name)  # type: ignore[return-value]


class _Logger:
    """structlog's logger of one module, made at its first use: a module that logs can
    be imported (a command's `--help` imports its command's module) without structlog."""

    __slots__ = ("_name", "_logger")

    def __init__(self, name: str) -> None:
        self._name, self._logger = name, None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attr)
