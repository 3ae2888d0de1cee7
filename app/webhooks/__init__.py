"""Signed webhooks: subscriptions, an outbox of events, and their delivery by a worker."""
