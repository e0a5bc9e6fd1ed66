"""Device fleet and crew simulators, scenarios and replays, speaking real MQTT."""
