"""`make chaos`: a Ladle fleet across hosts (network namespaces on one machine), run under network
faults, with the invariants checked after each scenario. See docs/architecture.md, "A fleet
across hosts, under network faults"."""
