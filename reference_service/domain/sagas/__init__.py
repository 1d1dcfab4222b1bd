"""Sagas: multi-step work across services, each step a transaction, failures compensated."""
