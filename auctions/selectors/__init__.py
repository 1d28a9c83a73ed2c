"""Reads of rounds, quotes and leases."""
