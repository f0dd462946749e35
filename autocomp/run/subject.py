"""The model a benchmark searches, whichever way it came in: a built-in op list
(``model.layers``) or a linen/NNX module (``model._target_``, the built-in experiments' zoo
modules and a user's own). ``bench agents`` and ``bench rank`` run on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from agents import AGENTS
from autocomp.run.builtin import build_env
from autocomp.workflow import pipeline


class Subject(NamedTuple):
    """A priced search space, the environment and its params, how a search's evaluations
    become a selection (``select(history, rescore=None)``), a plan's validation accuracy after
    one distillation epoch on the first ``examples`` training images (``short(indices,
    examples)``), its test accuracy after the experiment's fine-tuning (``tuned(indices,
    base_params=None)``; ``base_params``: materialized from these weights, a joint search's),
    the training images, and the trainer of an agent's config (``trainer(agent_config)``)."""

    space: object
    env: object
    env_params: object
    device: str
    select: Callable
    short: Callable
    tuned: Callable
    x_train: object
    trainer: Callable


def subject(config, out_dir: Path) -> Subject:
    """The experiment's model: a ``model._target_`` one with its checkpoint, or the base
    model trained once and cached (a copy kept in ``out_dir/base_checkpoint``); else the op
    list's, through the built-in pipeline."""
    if config.model._target_:
        return _custom(config, out_dir)
    p = pipeline.prepare(config)
    env, env_params = build_env(p)
    simulated = pipeline.plan_logits(env, env_params)

    def comp(indices):
        return pipeline.compress(p, indices, simulated(indices))

    return Subject(
        p.space, env, env_params, p.profile.name,
        lambda history, rescore=None: pipeline.select(p, history, rescore),
        lambda indices, examples: pipeline.short_finetune(p, comp(indices), examples),
        lambda indices, base_params=None: pipeline.finetune_compressed(p, comp(indices))[1],
        p.data.x_train,
        lambda agent_config: AGENTS[agent_config.name].make_trainer(agent_config, env),
    )  # fmt: skip


def _custom(config, out_dir: Path) -> Subject:
    from autocomp.data import load_dataset
    from autocomp.run.custom import search_trainer, setup, short_accuracy, tuned_accuracy
    from autocomp.workflow.custom import base_variables, output_fn

    data = load_dataset(config.data)
    model, variables, _ = base_variables(config, data, out_dir)
    m = config.model
    st = setup(model, variables, data, config, m.apply_kwargs, output_fn(m), m.name)
    return Subject(
        st.space, st.env, st.env_params, st.profile.name,
        lambda history, rescore=None: pipeline.select_plans(st.space, history, rescore),
        lambda indices, examples: short_accuracy(st, data, config, indices, examples),
        lambda indices, base_params=None: tuned_accuracy(
            st, data, config, indices,
            None if base_params is None else st.net.with_base_params(base_params),
        ),
        data.x_train,
        lambda agent_config: search_trainer(agent_config, st.env, st.env_params, st.net, data),
    )  # fmt: skip
