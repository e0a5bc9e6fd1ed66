"""The faust-streaming application: topics, agents (detect, correlate, dispatch, verify, persist), tables, timers."""
