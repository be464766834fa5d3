"""Use-cases: one per pipeline stage. They speak only to ports and the domain."""
