"""The bottom layer: topic contracts, the clock and the root error. It imports nothing of ours.

The engine and the executor share only what is here (and the transports that carry it): each topic's
name, key and pydantic value model (:mod:`~pipeline.contracts.topics`), the clock both read
(:mod:`~pipeline.contracts.clock`), and :class:`~pipeline.contracts.errors.PipelineError`, the root of every
error the project raises on purpose.
"""
