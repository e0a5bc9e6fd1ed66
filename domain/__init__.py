"""The shared vocabulary of cityops: devices, readings, incidents, work orders, crews, departments.

Every type here is immutable and carries timezone-aware UTC datetimes. Raw MQTT payloads, Kafka records and
SQL rows are decoded into these types at the edges and never travel further as dicts.
"""
