"""What the deployables share, with one owner each: text normalisation, the Redis layout, the
model repository and build folder layouts with their typed readers, the student's tensors,
and the Redis connection settings.

This package is the bottom layer: it imports nothing else of Switchyard, so the router, the
Triton launcher, the batch job, the pipeline and the tools can all depend on it.
"""
