"""Pricing actors."""
