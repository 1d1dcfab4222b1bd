"""Logs, traces and metrics of the reference service."""
