"""The SageMaker container protocol: the thin layer between SageMaker and the algorithm modules.

``environment`` (paths under SAGEMAKER_BASE_DIR, the input config JSON files), ``failure`` (exit
codes and the failure file), ``train`` / ``checkpoints`` / ``distributed`` (the training job),
``serve`` / ``server`` (the model server), ``processing`` (the processing jobs) and
``serving_limits`` (shared with the job definitions). container/README.md has the contract.
"""
