"""Operations: metrics, readiness checks, structured logs and alerts, fed by the
``gateway_event`` hook and read from the database (see docs/operating.md)."""
