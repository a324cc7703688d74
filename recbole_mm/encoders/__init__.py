"""Item encoders that turn item text (and, with the ``clip`` extra, images) into feature rows."""
