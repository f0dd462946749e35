"""A helper of the agent tests (not a test module): drive a trainer's chunks."""

import jax


def run_chunks(trainer, params, state, chunks: int):
    """``chunks`` chunks from ``state``; returns (state, the chunks' metrics on the host)."""
    out = []
    for _ in range(chunks):
        state, metrics = trainer.run_chunk(state, params)
        out.append(jax.device_get(metrics))
    return state, out
