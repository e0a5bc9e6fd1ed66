"""Travel in the city: distance in metres and time in seconds between two positions, and the route to draw.

Two models, chosen by the pack's manifest:

- ``RoadGraph`` — the pack's road graph (directed: one-way streets are one way). Each end is snapped to the
  nearest routable node (spatial index in the projected CRS); the legs between a position and its node are
  straight lines driven at the pack's ``off_network_speed_kmh``. The network part is the fastest path by
  ``travel_time_s`` (networkx Dijkstra). Two points closer to each other than to the network (the two ends of
  a square) travel straight between them at the off-network speed instead. Shortest-path trees are cached per
  destination node, so ranking many crews against one work order costs one Dijkstra.
- ``StraightLine`` — for packs without roads: straight-line metres × ``detour_factor`` at an assumed
  ``speed_kmh``. Its results say ``model=STRAIGHT_LINE``; they are estimates, not routes.

Never degrees: every length is measured in the pack's projected CRS.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import geopandas as gpd
import networkx as nx
import numpy as np
import shapely

from domain.geo import Position
from gis.projection import Projection

_KMH = 1000.0 / 3600.0  # metres per second in one km/h
_TREE_CACHE_SIZE = 512


class TravelModelKind(StrEnum):
    ROAD_GRAPH = "road_graph"
    STRAIGHT_LINE = "straight_line"


class OffNetworkError(ValueError):
    """A position too far from the road graph (beyond the pack's ``max_snap_m``) to route from or to."""


@dataclass(frozen=True, slots=True)
class Trip:
    """How far and how long from one position to another."""

    distance_m: float
    travel_time_s: float
    model: TravelModelKind

    @property
    def estimated(self) -> bool:
        """True when no road graph was used (straight line × detour factor)."""
        return self.model is TravelModelKind.STRAIGHT_LINE


@dataclass(frozen=True, slots=True)
class Route:
    """A trip with its path, for drawing a crew's way on a map (first point = origin, last = destination)."""

    distance_m: float
    travel_time_s: float
    model: TravelModelKind
    path: tuple[Position, ...]

    @property
    def trip(self) -> Trip:
        return Trip(self.distance_m, self.travel_time_s, self.model)


class TravelModel(Protocol):
    """What dispatch and simulators call; both models below implement it."""

    @property
    def kind(self) -> TravelModelKind: ...

    def trip(self, origin: Position, destination: Position) -> Trip: ...

    def route(self, origin: Position, destination: Position) -> Route: ...

    def trips_to(self, destination: Position, origins: Sequence[Position]) -> list[Trip | None]:
        """One trip per origin to one destination; None for an origin that cannot be routed from."""
        ...


class StraightLine:
    """Straight-line distance × a detour factor at an assumed speed: the model for a pack without roads."""

    __slots__ = ("_projection", "detour_factor", "speed_kmh")

    def __init__(self, projection: Projection, *, detour_factor: float, speed_kmh: float) -> None:
        if detour_factor < 1.0 or not math.isfinite(detour_factor):
            raise ValueError(f"detour_factor must be at least 1, got {detour_factor}")
        if speed_kmh <= 0 or not math.isfinite(speed_kmh):
            raise ValueError(f"speed_kmh must be positive, got {speed_kmh}")
        self._projection = projection
        self.detour_factor = detour_factor
        self.speed_kmh = speed_kmh

    @property
    def kind(self) -> TravelModelKind:
        return TravelModelKind.STRAIGHT_LINE

    def trip(self, origin: Position, destination: Position) -> Trip:
        ox, oy = self._projection.to_metres(origin)
        dx, dy = self._projection.to_metres(destination)
        return self._trip(math.hypot(dx - ox, dy - oy))

    def route(self, origin: Position, destination: Position) -> Route:
        trip = self.trip(origin, destination)
        return Route(trip.distance_m, trip.travel_time_s, trip.model, (origin, destination))

    def trips_to(self, destination: Position, origins: Sequence[Position]) -> list[Trip | None]:
        if not origins:
            return []
        dx, dy = self._projection.to_metres(destination)
        ox, oy = self._projection.many_to_metres(origins)
        return [self._trip(float(d)) for d in np.hypot(ox - dx, oy - dy)]

    def _trip(self, straight_m: float) -> Trip:
        distance_m = straight_m * self.detour_factor
        return Trip(distance_m, distance_m / (self.speed_kmh * _KMH), TravelModelKind.STRAIGHT_LINE)


@dataclass(frozen=True, slots=True)
class _Snap:
    node: int
    offset_m: float  # straight-line metres between the position and its node


class RoadGraph:
    """Fastest paths over a pack's directed road graph (see the module docstring for the rules)."""

    __slots__ = (
        "_graph",
        "_node_ids",
        "_node_positions",
        "_node_tree",
        "_projection",
        "_tree_to",
        "max_snap_m",
        "off_network_speed_kmh",
        "routable_nodes",
    )

    def __init__(
        self,
        nodes: gpd.GeoDataFrame,
        edges: gpd.GeoDataFrame,
        projection: Projection,
        *,
        off_network_speed_kmh: float,
        max_snap_m: float,
    ) -> None:
        """``nodes``: node_id + Point (any CRS); ``edges``: u, v, oneway, length_m, travel_time_s."""
        graph: nx.DiGraph = nx.DiGraph()
        for u, v, oneway, length_m, travel_time_s in zip(
            edges["u"].to_numpy(dtype=np.int64),
            edges["v"].to_numpy(dtype=np.int64),
            edges["oneway"].to_numpy(dtype=bool),
            edges["length_m"].to_numpy(dtype=np.float64),
            edges["travel_time_s"].to_numpy(dtype=np.float64),
            strict=True,
        ):
            directions = ((u, v),) if oneway else ((u, v), (v, u))
            for a, b in directions:
                # Two ways between the same nodes: a driver takes the faster.
                current = graph.get_edge_data(int(a), int(b))
                if current is None or travel_time_s < current["travel_time_s"]:
                    graph.add_edge(int(a), int(b), length_m=float(length_m), travel_time_s=float(travel_time_s))
        # Only the largest strongly connected part is routable both ways; the rest are one-way stubs cut off
        # at the edge of the extract, from which some destinations could never be reached.
        routable = max(nx.strongly_connected_components(graph), key=len) if len(graph) else set()
        self._graph = graph.subgraph(routable).copy()
        self.routable_nodes = len(routable)

        metres = nodes.to_crs(projection.crs)
        node_ids = metres["node_id"].to_numpy(dtype=np.int64)
        keep = np.fromiter((int(n) in routable for n in node_ids), dtype=bool, count=len(node_ids))
        self._node_ids = node_ids[keep]
        self._node_tree = shapely.STRtree(metres.geometry.to_numpy()[keep])
        lonlat = nodes.to_crs("EPSG:4326").geometry.to_numpy()[keep]
        self._node_positions = {
            int(n): Position(float(p.x), float(p.y)) for n, p in zip(self._node_ids, lonlat, strict=True)
        }
        self._projection = projection
        self.off_network_speed_kmh = off_network_speed_kmh
        self.max_snap_m = max_snap_m
        self._tree_to = functools.lru_cache(maxsize=_TREE_CACHE_SIZE)(self._shortest_path_tree_to)

    @property
    def kind(self) -> TravelModelKind:
        return TravelModelKind.ROAD_GRAPH

    @property
    def graph(self) -> nx.DiGraph:
        """The routable directed graph: node ids as in the pack, edges with length_m and travel_time_s."""
        return self._graph

    def trip(self, origin: Position, destination: Position) -> Trip:
        return self.route(origin, destination).trip

    def route(self, origin: Position, destination: Position) -> Route:
        o_xy = self._projection.to_metres(origin)
        d_xy = self._projection.to_metres(destination)
        o_snap = self._snap_one(o_xy, origin)
        d_snap = self._snap_one(d_xy, destination)
        straight_m = math.hypot(d_xy[0] - o_xy[0], d_xy[1] - o_xy[1])
        if straight_m <= o_snap.offset_m + d_snap.offset_m:
            return Route(straight_m, self._off_network_s(straight_m), self.kind, (origin, destination))
        nodes = self._path(o_snap.node, d_snap.node)
        network_m = sum(self._graph[a][b]["length_m"] for a, b in itertools.pairwise(nodes))
        network_s = self._tree_to(d_snap.node)[1][o_snap.node]
        offset_m = o_snap.offset_m + d_snap.offset_m
        path = [origin, *(self._node_positions[n] for n in nodes), destination]
        return Route(
            network_m + offset_m,
            network_s + self._off_network_s(offset_m),
            self.kind,
            tuple(p for i, p in enumerate(path) if i == 0 or p != path[i - 1]),
        )

    def trips_to(self, destination: Position, origins: Sequence[Position]) -> list[Trip | None]:
        if not origins:
            return []
        d_xy = self._projection.to_metres(destination)
        d_snap = self._snap_one(d_xy, destination)
        predecessors, seconds = self._tree_to(d_snap.node)
        ox, oy = self._projection.many_to_metres(origins)
        points = shapely.points(ox, oy)
        (_, hit), offsets = self._node_tree.query_nearest(points, return_distance=True, all_matches=False)
        trips: list[Trip | None] = []
        for x, y, tree_row, offset in zip(ox, oy, hit, offsets, strict=True):
            if offset > self.max_snap_m:
                trips.append(None)
                continue
            node = int(self._node_ids[tree_row])
            straight_m = math.hypot(d_xy[0] - x, d_xy[1] - y)
            if straight_m <= offset + d_snap.offset_m:
                trips.append(Trip(straight_m, self._off_network_s(straight_m), self.kind))
                continue
            network_m = self._network_length(node, d_snap.node, predecessors)
            offset_m = float(offset) + d_snap.offset_m
            trips.append(Trip(network_m + offset_m, seconds[node] + self._off_network_s(offset_m), self.kind))
        return trips

    def _off_network_s(self, metres: float) -> float:
        return metres / (self.off_network_speed_kmh * _KMH)

    def _snap_one(self, xy: tuple[float, float], position: Position) -> _Snap:
        tree_row, offset = self._node_tree.query_nearest(shapely.Point(*xy), return_distance=True, all_matches=False)
        offset_m = float(offset[0])
        if offset_m > self.max_snap_m:
            raise OffNetworkError(
                f"{position} is {offset_m:.0f} m from the nearest road node (limit {self.max_snap_m:.0f} m)"
            )
        return _Snap(int(self._node_ids[int(tree_row[0])]), offset_m)

    def _shortest_path_tree_to(self, target: int) -> tuple[dict[int, list[int]], dict[int, float]]:
        """Fastest time from every node to ``target`` and, per node, the next node on the way there.

        Dijkstra from the target on the reversed graph: its predecessor of a node is that node's successor on
        the forward path.
        """
        predecessors, seconds = nx.dijkstra_predecessor_and_distance(
            self._graph.reverse(copy=False), target, weight="travel_time_s"
        )
        return predecessors, seconds

    def _path(self, source: int, target: int) -> list[int]:
        predecessors = self._tree_to(target)[0]
        nodes = [source]
        while nodes[-1] != target:
            nodes.append(predecessors[nodes[-1]][0])
        return nodes

    def _network_length(self, source: int, target: int, predecessors: dict[int, list[int]]) -> float:
        metres = 0.0
        node = source
        while node != target:
            following = predecessors[node][0]
            metres += self._graph[node][following]["length_m"]
            node = following
        return metres
