"""Operations: the queue dashboard, Prometheus metrics and request logs."""
