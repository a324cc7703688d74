"""Data loading: multi-modal datasets, feature tables and atomic-file readers and writers."""
