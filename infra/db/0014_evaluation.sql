-- Evaluation (评价) reads the audit log by action and time, and breaches by department and time.
CREATE INDEX work_order_events_action_idx ON work_order_events (work_order_id, action, at);
CREATE INDEX sla_breaches_department_idx ON sla_breaches (department_code, detected_at);
