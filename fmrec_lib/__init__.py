"""fmrec_lib: FMRec (Flow Matching based Sequential Recommender, IJCAI 2025) reproduced."""
__version__ = "0.1.0"
