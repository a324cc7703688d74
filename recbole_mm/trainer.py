"""Trainers of recbole_mm models: ``<Model>Trainer`` classes, found by :func:`recbole_mm.utils.get_trainer`.

Models without a trainer of their own use RecBole's (``recbole.trainer.Trainer`` for most).
"""
