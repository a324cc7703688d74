"""recbole_mm models."""
