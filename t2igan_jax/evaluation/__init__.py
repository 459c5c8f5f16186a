"""Evaluation metrics: FID (``fid``, ``fid_inception``), Inception Score
(``inception_score``) and DAMSM R-precision (``r_precision``); SPEC-eval."""
