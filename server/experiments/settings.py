"""Config for the request log and for experiments defined in the config file.

[request_log]
retention_days = 90

[[experiments]]
name = "style-vs-rag"
description = "style adapter vs retrieval"
arms = [
  { name = "style", adapter = "style", control = true },
  { name = "rag", retrieval = true, top_k = 4 },
]
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybrid_assistant.server.errors import InvalidArgument
from hybrid_assistant.server.experiments.model import from_config


class RequestLogSettings(BaseModel):
    """The request log (every served Generate, with its feedback): a SQLite file, or PostgreSQL
    when database_url is set."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    enabled: bool = True
    """Log every served Generate. Off: experiments still assign arms, but reports and feedback
    have nothing to work on (RecordFeedback answers FAILED_PRECONDITION)."""
    path: Path | None = None
    """The SQLite file (experiments are stored in it too). Default: <data_dir>/request-log.sqlite3."""
    retention_days: float = Field(default=30.0, ge=0)
    """Requests older than this are deleted with their feedback; 0 keeps everything. Keep it
    longer than your experiments run: a report only sees the rows still kept."""
    retention_check_s: float = Field(default=3600.0, gt=0)
    """How often the writer deletes rows past the retention."""
    queue_size: int = Field(default=10_000, ge=1)
    """Rows waiting for the writer thread. When full, new rows are dropped (counted and logged):
    serving never waits for the log."""
    batch_size: int = Field(default=500, ge=1)
    """Most rows the writer commits in one transaction."""
    feedback_wait_s: float = Field(default=3.0, ge=0, le=60)
    """PostgreSQL (database_url) only: how long feedback for a request id not (yet) in the log waits
    for it before NOT_FOUND - the replica that served it writes its row asynchronously."""
    experiments_refresh_s: float = Field(default=1.0, gt=0, le=60)
    """PostgreSQL (database_url) only: how often a replica re-reads experiment definitions, so a
    create, stop or weight change made through any replica applies everywhere within this time."""


class ExperimentArmConfig(BaseModel):
    """One arm of a configured experiment: adapter or none, retrieval on or off, a traffic weight."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    adapter: str = ""
    """Adapter name ("" = the base model); checked when a request uses it (NOT_FOUND if unknown)."""
    retrieval: bool = False
    top_k: int = 0
    """Passages retrieved (0 = server default)."""
    mode: Literal["", "dense", "lexical", "hybrid"] = ""
    min_score: float = 0.0
    metadata_filter: dict[str, str] = Field(default_factory=dict)
    weight: float = 1.0
    control: bool = False


class ExperimentConfig(BaseModel):
    """An experiment created at start-up unless one of that name is already stored (the stored
    one wins: its state and weights may have been changed since by UpdateExperiment)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    description: str = ""
    arms: list[ExperimentArmConfig]

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        # The same checks as CreateExperiment, so a bad config fails at start-up with every problem
        # listed (top_k against the server's limit is checked again when the server opens it).
        try:
            from_config(self, max_top_k=2**31)
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
        return self
