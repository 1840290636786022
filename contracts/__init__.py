"""The contract between Ladle's API and its workers: names, shapes and the job record.

Nothing here imports flask or onnxruntime; both sides import this package.
"""
