"""The InferenceModel operator: verifies model artifacts, then rolls them out as Deployments.

Run it with `rtbserve operator`. The package lives under `operator/` (not importable as
`operator`, which is a standard-library module); pyproject's package finder adds it.
"""
