"""Getting models in and out: checkpoints and the hub (``checkpoints``, ``hub``), location tower
export (``export``) and bulk embedding of coordinate files (``embed``).

Nothing is imported here, so that loading an exported location tower pulls in only torch and
safetensors.
"""
