"""Detection, pure: the rule catalogue (data), evaluators with small state objects, the incident lifecycle, and
correlation. No I/O beyond reading the catalogue file at load; no clock; state is JSON-serialisable.

Entry points for ``streams/`` (docs/RULES.md has the full contract):

* ``rules.catalogue.load_rules(path) -> RuleSet`` — once, at start.
* ``rules.detection`` — per device (Table keyed by device id): ``evaluate``, ``observe_status``, ``tick``,
  ``acknowledge``, ``next_deadline``, ``state_to_json`` / ``state_from_json``.
* ``rules.correlation`` — per area (Table keyed by ``area_key``): ``correlate``, ``tick_area``,
  ``acknowledge_in_area``, ``next_area_deadline``, ``area_to_json`` / ``area_from_json``.
* ``domain.incident_events`` — ``IncidentEvent`` (the ``incidents`` topic), ``FactChange`` (the facts topic),
  ``ReadingRejected``, their JSON encoders and decoders, and ``area_key`` (the contract lives in domain/ because
  store/ and api/ read it too).
* ``rules.backtest.backtest(rules, records)`` — what would have fired, with no side effects.
"""
