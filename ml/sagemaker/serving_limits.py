"""Limits the model server enforces and the batch transform job declares.

SageMaker reads `/execution-parameters` only when a transform job leaves these unset, so the
job request (`ml.jobs`) and the server (`ml.sagemaker.server`) both import them from here: one
value, no drift between what the job sends and what the server accepts.
"""

from typing import Final

# The server answers 413 above this body size; batch transform packs records up to it.
MAX_PAYLOAD_MB: Final[int] = 20
MAX_PAYLOAD_BYTES: Final[int] = MAX_PAYLOAD_MB * 1024 * 1024

# Parallel requests one instance receives during batch transform.
MAX_CONCURRENT_TRANSFORMS: Final[int] = 4

BATCH_STRATEGY: Final[str] = "MULTI_RECORD"
