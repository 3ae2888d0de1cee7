"""Billing actors."""
