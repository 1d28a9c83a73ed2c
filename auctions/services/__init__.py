"""Use cases of rounds, pricing and leases."""
