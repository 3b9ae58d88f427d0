"""Kafka clients configured from `KafkaSettings`: faust's credentials, the idempotent
aiokafka producer of the monitor's outputs, the gap probe (topics: `streams.topics`).
SASL and SSL pass through unchanged; the password is read only here, never logged."""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, TopicPartition

from schemas.logs import librdkafka_callbacks
from schemas.settings import KafkaSettings


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    if "SSL" not in kafka.security_protocol.upper():
        return None
    return ssl.create_default_context(cafile=kafka.ssl_cafile)


def faust_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    context = ssl_context(kafka)
    if kafka.security_protocol.upper().startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_security(kafka: KafkaSettings) -> dict[str, Any]:
    config: dict[str, Any] = {"security_protocol": kafka.security_protocol.upper()}
    if kafka.sasl_mechanism:
        config["sasl_mechanism"] = kafka.sasl_mechanism
    if kafka.sasl_username:
        config["sasl_plain_username"] = kafka.sasl_username
    if kafka.sasl_password:
        config["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    context = ssl_context(kafka)
    if context is not None:
        config["ssl_context"] = context
    return config


def output_producer(kafka: KafkaSettings, *, max_request_size: int) -> AIOKafkaProducer:
    """Idempotent, acks=all: a trigger that was acknowledged is on every replica, and a
    retry inside the producer never writes it twice."""
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_request_size=max_request_size,
        **aiokafka_security(kafka),
    )


class GapProbe:
    """Asks the log itself where the first record at or after an offset is (blocking;
    used only when a consumer hands over a record past the expected one)."""

    def __init__(self, kafka: KafkaSettings, timeout_seconds: float = 10.0) -> None:
        self.kafka = kafka
        self.timeout_seconds = timeout_seconds
        self._consumer: Consumer | None = None

    def first_offset(self, topic: str, partition: int, offset: int) -> int | None:
        if self._consumer is None:
            self._consumer = Consumer({**self.kafka.client_config(), **librdkafka_callbacks("gap-probe", self.kafka.bootstrap_servers),
                                       "group.id": "driftline-gap-probe", "enable.auto.commit": False})
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        message = self._consumer.poll(self.timeout_seconds)
        if message is None or message.error() is not None:
            return None
        return message.offset()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
