"""Job handlers: one per job kind, turning a job into engine calls and events."""
