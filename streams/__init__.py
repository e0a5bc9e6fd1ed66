"""The stream processes on Kafka: the detection worker (worker.py: rule engines, state tables, timers, the incident
projection), the readings persister (persist.py) and the dispatcher (dispatch/); the topic topology (topology.py)."""
