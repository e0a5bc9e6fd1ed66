"""The MQTT edge: broker identities and ACLs, payload decoding and validation, dead letters, hand-off to Kafka."""
