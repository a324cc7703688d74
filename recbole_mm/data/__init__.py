"""Data loading: multi-modal datasets, feature tables, atomic-file writers and the demo dataset."""
