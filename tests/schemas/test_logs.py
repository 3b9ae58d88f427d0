"""Secrets never reach the logs: not under a secret's key, not nested, not in a traceback.
Repeats are limited per logger and message template, and a lost Kafka connection gives one
line when it is lost and one when it is back (`RepeatLimiter`, clock and probe injected)."""

from __future__ import annotations

import json
import logging

import pytest

from schemas.logs import LibrdkafkaLog, RepeatLimiter, configure_logging, get_logger
from schemas.settings import LogRepeatSettings, Settings

PASSWORD = "s3cr3t-pa55"
URL = f"postgresql://driftline:{PASSWORD}@db:5432/driftline"
REFUSED = "Unable connect to node with id %s: %s"


def test_secrets_are_redacted_at_any_depth_and_in_tracebacks(capsys):
    configure_logging("INFO")
    log = get_logger("test")
    log.info("flat", dsn=URL, sasl_password=PASSWORD, note=f"see {URL}")
    log.info("nested", settings={"postgres": {"dsn": URL}, "brokers": [URL]})
    try:
        raise ConnectionError(f"cannot connect to {URL}")
    except ConnectionError as error:
        log.error("failed", exc_info=error)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["flat", "nested", "failed"]
    assert "ConnectionError" in lines[2]["exception"]
    for line in lines:
        assert PASSWORD not in json.dumps(line)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Probe:
    def __init__(self) -> None:
        self.up = False
        self.asked: list[str] = []

    def __call__(self, broker: str) -> bool:
        self.asked.append(broker)
        return self.up


def limiter(**settings) -> tuple[RepeatLimiter, list[logging.LogRecord], Clock, Probe]:
    out: list[logging.LogRecord] = []
    clock, probe = Clock(), Probe()
    return RepeatLimiter(LogRepeatSettings(**settings), out.append, clock=clock, reachable=probe), out, clock, probe


def record(name: str, msg: object, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def refused(node: int = 1, port: int = 39719) -> logging.LogRecord:
    return record("aiokafka", REFUSED, node, ConnectionRefusedError(f"Connect call failed ('127.0.0.1', {port})"))


def passed(lim: RepeatLimiter, records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if lim.filter(r)]


def test_the_first_records_of_a_template_pass_and_the_rest_are_counted_per_logger_and_template():
    lim, out, _, _ = limiter(limit=3)
    # The arguments differ (ids, addresses): it is the same message.
    same = [record("app.fetcher", "Failed fetch messages from %s: %s", i, f"node {i}") for i in range(10)]
    assert passed(lim, same) == same[:3]
    other_template = [record("app.fetcher", "Heartbeat failed: %s", i) for i in range(4)]
    other_logger = [record("app.other", "Failed fetch messages from %s: %s", i, "x") for i in range(4)]
    assert len(passed(lim, other_template)) == 3
    assert len(passed(lim, other_logger)) == 3
    assert out == []  # nothing reported before the window ends


def test_a_window_ends_with_one_summary_per_template_then_counting_starts_again():
    lim, out, clock, _ = limiter(limit=2, window_seconds=60)
    passed(lim, [record("app", "boom %s", i, level=logging.WARNING) for i in range(5)])
    passed(lim, [record("app", "bang %s", i) for i in range(2)])  # none suppressed: no summary
    clock.now += 59.9
    lim.tick()
    assert out == []
    clock.now += 0.1
    lim.tick()
    assert [(r.name, r.levelno, r.getMessage(), r.repeated, r.suppressed) for r in out] == [
        ("app", logging.WARNING, "3 similar messages suppressed in the last 60 s", "boom %s", 3)]
    lim.tick()
    assert len(out) == 1  # reported once
    assert len(passed(lim, [record("app", "boom %s", i) for i in range(3)])) == 2


def test_a_record_after_its_window_ended_reports_the_window_first():
    lim, out, clock, _ = limiter(limit=1, window_seconds=10)
    passed(lim, [record("app", "boom %s", i) for i in range(4)])
    clock.now += 10
    assert lim.filter(record("app", "boom %s", 9))
    assert [r.getMessage() for r in out] == ["3 similar messages suppressed in the last 10 s"]


def test_structlog_events_are_keyed_on_the_event_not_on_their_fields():
    lim, _, _, _ = limiter(limit=2)
    events = [record("streams.monitor_loop", {"event": "offset commit failed", "partition": i}, level=logging.WARNING)
              for i in range(5)]
    assert len(passed(lim, events)) == 2


def test_records_below_the_minimum_level_are_never_limited():
    lim, _, _, _ = limiter(limit=1, min_level="WARNING")
    triggers = [record("streams.monitor_loop", {"event": "trigger", "model": i}, level=logging.INFO) for i in range(20)]
    assert passed(lim, triggers) == triggers


def test_flush_reports_a_window_cut_short_at_exit():
    lim, out, clock, _ = limiter(limit=1, window_seconds=60)
    passed(lim, [record("app", "boom %s", i) for i in range(3)])
    clock.now += 12
    lim.flush()
    assert [r.getMessage() for r in out] == ["2 similar messages suppressed in the last 12 s"]


def test_a_lost_broker_gives_one_lost_line_and_one_back_line_once_it_accepts_connections():
    lim, out, clock, probe = limiter(limit=3, recovered_after_seconds=5)
    passes = 0
    for _ in range(200):  # 20 s of an outage, 30 errors a second
        clock.now += 0.1
        passes += len(passed(lim, [
            refused(), record("aiokafka", "Unable to update metadata from %s", [1]),
            record("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s", 1,
                   "NodeNotReadyError: Attempt to send a request to node which is not ready")]))
        lim.tick()
    assert passes == 9  # three templates, three each
    lost = [r for r in out if r.name == "kafka.connection"]
    assert len(lost) == 1
    assert lost[0].levelno == logging.WARNING
    assert lost[0].getMessage() == ("Kafka connection lost: faust join agents (aiokafka) cannot reach broker "
                                    "127.0.0.1:39719, retrying")
    assert lost[0].component == "faust join agents (aiokafka)" and lost[0].broker == "127.0.0.1:39719"
    # Quiet, but the broker still refuses connections: not back.
    clock.now += 5
    lim.tick()
    assert probe.asked == ["127.0.0.1:39719"] and len(out) == 1
    probe.up = True
    clock.now += 1
    lim.tick()
    back = out[1]
    assert back.levelno == logging.INFO and back.name == "kafka.connection"
    assert back.getMessage() == "Kafka connection back: faust join agents (aiokafka) reaches broker 127.0.0.1:39719 again"
    assert back.errors == 600 and back.down_seconds == pytest.approx(25.9)
    lim.tick()
    assert len(out) == 2
    # A later outage is a new one.
    lim.filter(refused())
    assert [r.getMessage().split(":")[0] for r in out[2:]] == ["Kafka connection lost"]


def test_an_outage_is_not_over_while_its_errors_continue_even_if_the_broker_answers():
    lim, out, clock, probe = limiter(recovered_after_seconds=5)
    probe.up = True
    for _ in range(100):
        clock.now += 1
        lim.filter(refused())
        lim.tick()
    assert [r.name for r in out if r.name == "kafka.connection"] == ["kafka.connection"]
    assert all("back" not in r.getMessage() for r in out)


def test_librdkafka_lines_and_errors_go_through_the_limiter_with_the_component_and_the_broker():
    lim, out, _, _ = limiter(limit=2)
    handler_records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, r: logging.LogRecord) -> None:
            handler_records.append(r)

    handler = Collect()
    handler.addFilter(lim)
    logger = logging.getLogger("librdkafka.monitor")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        log = LibrdkafkaLog("monitor")
        for i in range(50):  # what confluent-kafka calls with its `logger` config
            log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-3",
                    "[thrd:127.0.0.1:39719/bootstrap]: 127.0.0.1:39719/bootstrap: Connect to ipv4#127.0.0.1:39719 "
                    f"failed: Connection refused (after {i}ms in state CONNECT)")

        class Error:  # confluent_kafka.KafkaError's interface
            def name(self) -> str:
                return "_ALL_BROKERS_DOWN"

            def str(self) -> str:
                return "1/1 brokers are down"

            def fatal(self) -> bool:
                return False

        for _ in range(50):
            log.error(Error())
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert [r.getMessage()[:40] for r in handler_records] == [
        "FAIL: 127.0.0.1:39719/bootstrap: Connect"] * 2 + ["_ALL_BROKERS_DOWN: 1/1 brokers are down"] * 2
    lost = [r for r in out if r.name == "kafka.connection"]
    assert len(lost) == 1
    assert lost[0].component == "librdkafka.monitor" and lost[0].broker == "127.0.0.1:39719"


def test_the_limiter_is_set_up_with_json_lines_and_redacts_what_it_reports(capsys):
    configure_logging("INFO", LogRepeatSettings(limit=2))
    aiokafka = logging.getLogger("aiokafka")
    for _ in range(20):
        aiokafka.error('Unable connect to "%s:%s": %s', "10.0.0.7", 9092, f"authentication failed for {URL}")
    logging.getLogger().handlers[0].filters[0].flush()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("kafka.connection", "warning"), ("aiokafka", "error"), ("aiokafka", "error"), ("aiokafka", "error")]
    assert lines[0]["broker"] == "10.0.0.7:9092" and "retrying" in lines[0]["event"]
    assert lines[3]["event"] == "18 similar messages suppressed in the last 0 s"
    assert lines[3]["repeated"] == 'Unable connect to "%s:%s": %s' and lines[3]["suppressed"] == 18
    for line in lines:
        assert PASSWORD not in json.dumps(line)
    configure_logging("INFO")


def test_the_limits_are_settings_with_defaults_and_environment_overrides(monkeypatch):
    assert Settings().log_repeats == LogRepeatSettings(limit=3, window_seconds=60.0, min_level="WARNING",
                                                       recovered_after_seconds=5.0)
    monkeypatch.setenv("DRIFTLINE_LOG_REPEATS__LIMIT", "7")
    monkeypatch.setenv("DRIFTLINE_LOG_REPEATS__WINDOW_SECONDS", "30")
    assert Settings().log_repeats.limit == 7 and Settings().log_repeats.window_seconds == 30


def test_a_librdkafka_error_without_a_broker_names_the_clients_bootstrap_servers():
    lim, out, _, _ = limiter(limit=2)
    logger = logging.getLogger("librdkafka.retrainer")

    class Drop(logging.Handler):  # (NullHandler skips the filters)
        def emit(self, r: logging.LogRecord) -> None:
            pass

    handler = Drop()
    handler.addFilter(lim)
    logger.addHandler(handler)
    logger.propagate = False

    class Error:
        def name(self) -> str:
            return "_ALL_BROKERS_DOWN"

        def str(self) -> str:
            return "1/1 brokers are down"

    try:
        LibrdkafkaLog("retrainer", "kafka-1.example:9093,kafka-2.example:9093").error(Error())
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lost = [r for r in out if r.name == "kafka.connection"]
    assert [(r.component, r.broker) for r in lost] == [("librdkafka.retrainer", "kafka-1.example:9093")]
