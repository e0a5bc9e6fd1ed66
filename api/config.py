"""What the HTTP API needs to run, as one plain value built by the shell (``cityops/cli_api.py``) from settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from domain.catalogue import Catalogue
from domain.sla import SlaPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    token_secret: str
    token_ttl: timedelta
    catalogue: Catalogue
    sla: SlaPolicy
    jurisdiction_id: str  # Open311: the one jurisdiction this endpoint serves (the city pack's name)
    city_name: str
    catalogue_changed_at: datetime = datetime(2026, 1, 1, tzinfo=UTC)  # Open311 discovery's changeset
    public_url: str | None = None  # the API's address as clients see it; Open311 discovery names it
    open311_contact: str = "Write to the city's operations centre."
    open311_key_service: str = "Ask the operations centre for a key."
    max_clock_skew: timedelta = timedelta(minutes=5)  # how far ahead of our clock a crew's report may be
