"""Applies the SQL migrations in `schemas/sql/` in file-name order, once each.

Each applied file is recorded in `schema_migrations` with a checksum, inside the same
transaction as the file itself, so a failed migration leaves nothing half-applied. A
file whose content changed after it was applied is an error, not silently skipped.

    driftline db migrate [--schema NAME]     (or python -m schemas.migrate)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded when the command runs (`--help` stays light)
    import psycopg

    from schemas.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "sql"
# Any constant works; it only has to be the same for every migrator.
_ADVISORY_LOCK_KEY = 0x44524654


class MigrationError(RuntimeError):
    """A migration could not be applied, or an applied one was changed afterwards."""


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [Migration(p.stem, p) for p in sorted(directory.glob("*.sql"))]


def apply_migrations(conn: psycopg.Connection, schema: str = "public") -> list[str]:
    """Brings `schema` up to date; returns the versions applied by this call."""
    from psycopg import sql

    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version TEXT PRIMARY KEY,
                checksum TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )
            """
        )
        recorded = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
        for migration in available_migrations():
            if migration.version in recorded:
                if recorded[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"{migration.path.name} changed after it was applied to schema "
                        f"{schema!r}; add a new migration instead"
                    )
                continue
            conn.execute(migration.text)
            conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                (migration.version, migration.checksum),
            )
            applied_now.append(migration.version)
    return applied_now


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", help="schema to migrate (default: postgres.db_schema)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    schema = args.schema or settings.postgres.db_schema
    import psycopg

    with psycopg.connect(settings.postgres.dsn.get_secret_value()) as conn:
        applied = apply_migrations(conn, schema)
    print(f"migrate: schema {schema}: " + (", ".join(applied) or "up to date"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    from schemas.settings import Settings

    sys.exit(run(parser.parse_args(), Settings.load()))
