"""The base of every boundary type: a frozen pydantic model that rejects unknown keys.

A misspelt key in a profile, a plan or a config is an error rather than a silent default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """Base for every boundary type: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")
