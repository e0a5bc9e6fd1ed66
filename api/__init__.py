"""HTTP API for crews, dispatchers and third parties; Open311 GeoReport v2; OpenAPI."""
