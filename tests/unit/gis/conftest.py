"""Shared fixtures for the gis tests: the shipped city packs (loaded once) and the platform catalogue."""

from __future__ import annotations

import pytest

from domain.catalogue import Catalogue, load_catalogue
from gis.pack import CityPack, load_pack


@pytest.fixture(scope="session")
def helsinki() -> CityPack:
    return load_pack("helsinki")


@pytest.fixture(scope="session")
def montreal() -> CityPack:
    return load_pack("montreal")


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return load_catalogue()
