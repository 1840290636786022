"""The API side of the job queue: submit and route jobs, follow their events, answer from them."""
