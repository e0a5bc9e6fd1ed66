"""The local service supervisor: Mosquitto, Apache Kafka (KRaft) and PostgreSQL from the machine's packages.

Everything lives under the state folder, binds to 127.0.0.1, and is stopped by the pid we recorded -- never by
name -- so ``down`` stops only what ``up`` started.
"""
