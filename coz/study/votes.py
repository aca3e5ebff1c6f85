"""The votes of a study, in a database through SQLAlchemy: SQLite by default, any SQLAlchemy URL.

Tables: ``study`` (the manifest hash the database belongs to), ``raters`` (id, the secret token of
the rater's link, when they started), ``votes`` (rater, question, kind, image, method, score 1-5,
time, manifest hash; one vote per rater, question and method, enforced by the database). A question's
votes are committed together, at once; SQLite runs in WAL mode with ``synchronous=FULL``, so a vote
the server answered for survives a kill -9 (or a power cut) of the server.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coz.errors import CozError, RunEnvironmentError

DATABASE = "votes.sqlite"


def default_url(study_dir: str | Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / DATABASE}"


def _tables():
    from sqlalchemy import (
        CheckConstraint,
        Column,
        DateTime,
        ForeignKey,
        Integer,
        MetaData,
        String,
        Table,
        Text,
        UniqueConstraint,
    )

    metadata = MetaData()
    study = Table(
        "study",
        metadata,
        Column("key", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )
    raters = Table(
        "raters",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("token", String(64), nullable=False, unique=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    votes = Table(
        "votes",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("rater_id", Integer, ForeignKey("raters.id"), nullable=False),
        Column("question", String(64), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("image", Text, nullable=False),
        Column("method", Text, nullable=False),
        Column("score", Integer, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("manifest_sha256", String(64), nullable=False),
        UniqueConstraint("rater_id", "question", "method", name="one_vote_per_item"),
        CheckConstraint("score >= 1 AND score <= 5", name="score_1_to_5"),
    )
    return metadata, study, raters, votes


class VoteStore:
    """Raters and votes of one study (its manifest hash) in the database at ``url``."""

    def __init__(self, url: str, manifest_sha256: str, create: bool = True) -> None:
        from sqlalchemy import create_engine, event, select
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

        try:
            parsed = make_url(url)
        except ArgumentError:
            raise CozError(
                f"db={url}: not a SQLAlchemy URL (e.g. sqlite:///votes.sqlite, postgresql://host/db)"
            ) from None
        self.sqlite = parsed.get_backend_name() == "sqlite"
        self.manifest_sha256 = manifest_sha256
        self.metadata, self.study, self.raters, self.votes = _tables()
        try:
            if self.sqlite:
                # many server threads share the pool; a writer waits up to 30 s for another's commit
                self.engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
                event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
        except (NoSuchModuleError, ModuleNotFoundError) as err:
            raise CozError(
                f"db={parsed.render_as_string(hide_password=True)}: no driver for it here ({err})"
            ) from None
        where = parsed.render_as_string(hide_password=True)
        try:
            if create:
                self.metadata.create_all(self.engine)
            with self.engine.begin() as conn:
                known = conn.execute(
                    select(self.study.c.value).where(self.study.c.key == "manifest_sha256")
                ).scalar()
                if known is None and create:
                    conn.execute(self.study.insert().values(key="manifest_sha256", value=manifest_sha256))
        except SQLAlchemyError as err:
            raise RunEnvironmentError(
                f"db={where}: cannot open the vote database ({_first_line(err)})"
            ) from None
        if known is not None and known != manifest_sha256:
            raise CozError(
                f"db={where} holds the votes of another study (manifest {known[:12]}, this one "
                f"{manifest_sha256[:12]}); give this study its own db="
            )

    # ------------------------------------------------------------------ raters
    def new_rater(self) -> tuple[int, str]:
        """A new rater: (number 1, 2, ..., secret token of their link)."""
        token = secrets.token_urlsafe(18)
        with self.engine.begin() as conn:
            result = conn.execute(self.raters.insert().values(token=token, created_at=_now()))
            return int(result.inserted_primary_key[0]), token

    def rater(self, token: str) -> int | None:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            return conn.execute(select(self.raters.c.id).where(self.raters.c.token == token)).scalar()

    def answered(self, rater_id: int) -> set[str]:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            rows = conn.execute(
                select(self.votes.c.question).where(self.votes.c.rater_id == rater_id).distinct()
            )
            return {row[0] for row in rows}

    # ------------------------------------------------------------------ votes
    def vote(self, rater_id: int, question: str, kind: str, image: str, scores: dict[str, int]) -> bool:
        """Record one question's scores (method -> 1..5) in one transaction, committed before this
        returns. False, with nothing written, when the rater already answered it."""
        from sqlalchemy.exc import IntegrityError

        now = _now()
        rows = [
            {
                "rater_id": rater_id,
                "question": question,
                "kind": kind,
                "image": image,
                "method": method,
                "score": int(score),
                "created_at": now,
                "manifest_sha256": self.manifest_sha256,
            }
            for method, score in scores.items()
        ]
        try:
            with self.engine.begin() as conn:
                conn.execute(self.votes.insert(), rows)
        except IntegrityError:
            return False  # the unique (rater, question, method): a second answer is not a second vote
        return True

    def all_votes(self) -> list[dict[str, Any]]:
        """Every vote of this study (its manifest hash), oldest first."""
        from sqlalchemy import select

        v = self.votes
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(v.c.rater_id, v.c.question, v.c.kind, v.c.image, v.c.method, v.c.score, v.c.created_at)
                .where(v.c.manifest_sha256 == self.manifest_sha256)
                .order_by(v.c.id)
            )
            return [dict(row._mapping) for row in rows]

    def count_raters(self) -> int:
        from sqlalchemy import func, select

        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.raters)).scalar())

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
    cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk before it returns
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _first_line(err: Exception) -> str:
    return str(getattr(err, "orig", None) or err).splitlines()[0]
