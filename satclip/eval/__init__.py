"""Evaluation of location encoders: fitting to tables (locfit), the Siren(SH) benchmark (locbench),
probes of pretrained embeddings (probe), embedding maps (plots) and point sets and task labels on the sphere (points).

Submodules are imported on demand; nothing is imported here so that ``satclip.eval.locfit`` does
not pull in matplotlib or scikit-learn.
"""
