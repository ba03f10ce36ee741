"""Lesson 06 (query-ad relevance): XGLUE QADSM (``qadsm``), unlabelled transfer sets (``transfer``), the
cross-encoder teacher (``crossencoder``), TwinBERT and C-DSSM (``twotower``) with their training, scoring and
serving (``rankers``), KD losses for one relevance score (``relevance``), ROC-AUC / nDCG / RankScore
(``metrics``) and the recipe on N GPUs (``scaling``). Depends on ``text`` and ``common``."""
