"""Racing of a batch's plan evaluation (``env.race.*``): every plan on the first validation
examples, only the best few also on the rest."""

import jax
import jax.numpy as jnp

from autocomp.search.reward import compute_reward


def race_batch(logits, plans, spent, params, n_race: int, keep: int):
    """(reward, accuracy, violation) [B]: every plan scored on the first ``n_race`` examples of
    ``params.x_val``; the ``keep`` plans with the best reward there also on the rest (their
    accuracy is then the whole split's). ``logits(plan, params, x)`` is the simulated model."""

    def correct(plan, x, y):
        pred = jnp.argmax(logits(plan, params, x), axis=-1)
        return jnp.sum(pred == y).astype(jnp.float32)  # padding labels (-1) never match

    score = jax.vmap(compute_reward, in_axes=(None, 0, 0))
    x_a, y_a = params.x_val[:n_race], params.y_val[:n_race]
    x_b, y_b = params.x_val[n_race:], params.y_val[n_race:]
    n_a = jnp.maximum(jnp.sum(y_a >= 0), 1).astype(jnp.float32)
    n_all = jnp.maximum(jnp.sum(params.y_val >= 0), 1).astype(jnp.float32)
    right_a = jax.lax.map(lambda plan: correct(plan, x_a, y_a), plans)
    estimate, _ = score(params.reward, right_a / n_a, spent[:, :3])
    _, best = jax.lax.top_k(estimate, keep)
    right_b = jax.lax.map(lambda plan: correct(plan, x_b, y_b), plans[best])
    acc = (right_a / n_a).at[best].set((right_a[best] + right_b) / n_all)
    reward, violation = score(params.reward, acc, spent[:, :3])
    return reward, acc, violation
