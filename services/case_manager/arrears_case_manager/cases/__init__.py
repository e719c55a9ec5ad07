"""Collections cases: state machine, escalation, timeline."""
