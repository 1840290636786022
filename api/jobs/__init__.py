"""/v1/jobs/{id}: a job's record, events and cancel."""
