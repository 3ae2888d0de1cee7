"""Fleet actors."""
