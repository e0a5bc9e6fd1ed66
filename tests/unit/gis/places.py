"""Real places (WGS 84) in the shipped city packs, with what is known about them."""

from __future__ import annotations

from domain.geo import Position

# Real places in central Helsinki (WGS 84), used across the tests.
CENTRAL_STATION = Position(24.9414, 60.1710)
SENATE_SQUARE = Position(24.9525, 60.1694)
EROTTAJA_FIRE_STATION = Position(24.9454, 60.1652)
HAKANIEMI_MARKET_SQUARE = Position(24.9517, 60.1786)
ESPLANADI_PARK = Position(24.9460, 60.1675)
KAISANIEMI_BAY = Position(24.9440, 60.1775)  # water between Kaisaniemi and Siltasaari, inside the extract
SOUTH_HARBOUR = Position(24.9580, 60.1660)  # the sea east of Market Square, outside the extract
TAMPERE = Position(23.7610, 61.4978)

# Real places in Montréal.
MONTREAL_CITY_HALL = Position(-73.5540, 45.5088)
OLYMPIC_STADIUM = Position(-73.5516, 45.5580)
WESTMOUNT_CITY_HALL = Position(-73.5987, 45.4848)  # Westmount is its own city, an enclave in Montréal
ST_LAWRENCE_RIVER = Position(-73.5200, 45.4900)
