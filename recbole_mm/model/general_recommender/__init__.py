"""General (user-item) multi-modal recommenders (one model per file, named after the lower-cased class)."""
