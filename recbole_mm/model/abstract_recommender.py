"""The family bases of recbole_mm's models live here (RecBole's own bases are in
``recbole.model.abstract_recommender``): a model file subclasses one of them and adds only what is particular to
its paper.

* :class:`MultiModalSequentialRecommender`: multi-modal sequential models with a pre-training stage (MISSRec,
  MMSRec, PMMRec); see :mod:`recbole_mm.model.multimodal_sequential`.
* :class:`LongSequenceRecommender`: long-sequence target attention over (item, query) histories (SIM, ETA, QIN,
  TWIN, SEMINAR); see :mod:`recbole_mm.model.long_sequence`.
* :class:`GraphRecommender`: graph recommenders over normalised sparse user-item operators (MMSSL); see
  :mod:`recbole_mm.model.graph`.
"""

from recbole_mm.model.graph import GraphRecommender
from recbole_mm.model.long_sequence import LongSequenceRecommender
from recbole_mm.model.multimodal_sequential import MultiModalSequentialRecommender

__all__ = ["GraphRecommender", "LongSequenceRecommender", "MultiModalSequentialRecommender"]
