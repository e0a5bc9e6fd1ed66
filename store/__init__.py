"""PostgreSQL/TimescaleDB access: the connection pool, migrations, COPY sinks and the queries the UI and API use."""
