"""The compression environment: one episode is one sweep over a model's compressible layers."""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Bool, Float, Int

from autocomp.models.layers import as_network
from autocomp.models.ops import apply_op
from autocomp.search.reward import RewardParams, compute_reward
from autocomp.search.space import SearchSpace, min_rest
from autocomp.search.spaces import EnvSpec, Observation, StepInfo, episode_record
from autocomp.sharding import labelled_accuracy
from autocomp.techniques import Technique, identity_index, layer_forward, layer_out_mask
from envs import greedy
from envs.probes import affine, identity_correction, probe, relative_error, with_correction
from envs.racing import race_batch

N_STATIC = 10
PROBE_EXAMPLES = 64  # validation images whose layer inputs measure each technique's error


class EnvParams(NamedTuple):
    """Per-search constants, as arrays (vmappable; never baked into the compiled code)."""

    base_params: dict
    aux: tuple[dict, ...]
    x_val: Float[Array, "n h w c"]
    y_val: Int[Array, " n"]
    ratios: Float[Array, " R"]
    costs: Float[Array, "L T R W 5"]
    rest: Float[Array, "L1 R 5"]
    out_bin: Int[Array, "L T R"]
    allowed: Array
    fixed: Float[Array, " 5"]
    static_features: Float[Array, "L F"]
    sensitivity: Float[Array, "L T R"]
    correction: tuple  # per layer float[T, R, 2, features]: envs.probes.channel_correction
    reward: RewardParams


class EnvState(NamedTuple):
    """``layer``: next layer to decide; ``group_bin``: int[G + 1] ratio bin of the channels each
    channel group kept so far (its root decides it; the last entry, for layers outside every
    group, stays 0); ``plan``: int[L, 2] (technique, ratio bin) so far; ``spent``: cost
    channels so far; ``prev_action``: the last applied action."""

    layer: Int[Array, ""]
    group_bin: Int[Array, " G1"]
    plan: Int[Array, "L 2"]
    spent: Float[Array, " 5"]
    prev_action: Int[Array, " 2"]


class CompressionEnv:
    """Per-layer compression of a trained Flax model (built-in op tuple or a user's network).

    - Observation (:class:`~autocomp.search.spaces.Observation`): ``features`` float32[obs_dim] =
      the layer's static descriptors [10] (index, kind, widths, kernel, stride, weights, MAC
      share, classifier flag), its sensitivity [T*R] (relative output error of every technique
      at every ratio on the layer's inputs: the compressor reads the weights, as DeepIoT's), the
      input-width bin one-hot [R], cost spent so far / base [3], cheapest rest / base [3],
      budget slack / base [3], previous action one-hots [T + R]; ``action_mask`` bool[T, R].
    - Action: int32[2] (technique index, ratio-bin index).
    - Reward: 0 until the last layer, then :func:`autocomp.search.reward.compute_reward` of the plan
      (validation accuracy of the simulated plan; latency, energy, size from the cost table).
    - Termination: after ``L`` steps (one per compressible layer).
    - Budgets: an action is masked when even the cheapest completion of the plan would exceed
      a budget (exact for one budget). A masked action sent anyway is projected onto the nearest
      allowed one and ``info.applied_action`` says which: learn from that.
    - Racing (``race=(n, keep)``, n > 0): :func:`envs.racing.race_batch` in :meth:`batch_step`
      (then not ``vmap(step)``); ``evaluate_plans(..., full=True)`` scores the whole split.
    - State: :class:`EnvState`, a pytree of arrays.
    """

    def __init__(
        self, model, space: SearchSpace, race: tuple[int, float] = (0, 1.0), correct: bool = False
    ):
        """``race``: (examples, keep) of racing in :meth:`batch_step` (0 examples: off);
        ``correct``: score plans with the output-statistics correction (:meth:`logits`)."""
        self.network = as_network(model, space.layers)
        self.correct = bool(correct)
        self.race_examples, self.race_keep = int(race[0]), float(race[1])
        self.space = space
        self.layers = space.layers
        self.techniques: tuple[Technique, ...] = space.techniques
        n_t, n_r = len(space.techniques), len(space.ratios)
        self.spec = EnvSpec(
            num_steps=len(space.layers),
            num_techniques=n_t,
            num_ratios=n_r,
            obs_dim=N_STATIC + n_t * n_r + n_r + 9 + n_t + n_r,
            technique_names=tuple(t.name for t in space.techniques),
            ratios=tuple(space.ratios),
        )

    # ----------------------------------------------------------------- params
    def make_params(
        self,
        base_params: dict,
        aux: tuple[dict, ...],
        x_val: np.ndarray,
        y_val: np.ndarray,
        reward: RewardParams,
        x_stats: np.ndarray | None = None,
    ) -> EnvParams:
        """Everything a search needs, precomputed on the host; ``x_stats``: images whose first
        ``STATS_EXAMPLES`` fit the output-statistics correction where the environment scores
        with it (the training split; default: the sensitivity's validation probe; without the
        correction, ``correction`` holds the identity: :func:`envs.probes.with_correction`)."""
        s = self.space
        n_t, n_r = len(self.techniques), len(s.ratios)
        x_probe = np.asarray(x_val[:PROBE_EXAMPLES])
        ones = [np.ones((n_t, n_r))] * len(self.layers)  # 1 where a technique does not fit
        sensitivity = probe(self.network, self.layers, self.techniques, s.ratios, base_params,
                            aux, x_probe, relative_error, ones)  # fmt: skip
        params = EnvParams(
            base_params=jax.tree.map(jnp.asarray, base_params),
            aux=jax.tree.map(jnp.asarray, aux),
            x_val=jnp.asarray(x_val),
            y_val=jnp.asarray(y_val, jnp.int32),
            ratios=jnp.asarray(s.ratios, jnp.float32),
            costs=jnp.asarray(np.where(np.isfinite(s.costs), s.costs, 1e30), jnp.float32),
            rest=jnp.asarray(min_rest(s), jnp.float32),
            out_bin=jnp.asarray(s.out_bin),
            allowed=jnp.asarray(s.allowed),
            fixed=jnp.asarray(s.fixed, jnp.float32),
            static_features=jnp.asarray(self._static_features(), jnp.float32),
            sensitivity=jnp.asarray(np.stack(sensitivity), jnp.float32),
            correction=jax.tree.map(jnp.asarray, identity_correction(self.layers, n_t, n_r)),
            reward=reward,
        )
        if not self.correct:  # the identity: it costs a pass per technique and ratio
            return params
        return with_correction(self, params, x_probe if x_stats is None else x_stats)

    def _static_features(self) -> np.ndarray:
        s = self.space
        n_l = len(self.layers)
        keep = identity_index(self.techniques)
        macs = s.costs[:, keep, 0, 0, 4]
        rows = []
        for layer in self.layers:
            c_in = layer.in_shape[-1]
            rows.append(
                [
                    layer.index / max(1, n_l - 1),
                    float(layer.kind == "conv"),
                    np.log2(c_in) / 12,
                    np.log2(layer.features) / 12,
                    layer.kernel / 7,
                    layer.op.stride / 4,
                    np.log10(layer.fan_in * layer.features) / 8,
                    macs[layer.index] / macs.sum(),
                    float(layer.is_classifier),
                    np.log2(max(1, np.prod(layer.in_shape[:-1]))) / 12,
                ]
            )
        return np.array(rows)

    # ------------------------------------------------------------ simulation
    def logits(
        self,
        plan: Int[ArrayLike, "L 2"],
        params: EnvParams,
        x: Float[ArrayLike, "n ..."],
        correct: bool | None = None,
        post=None,
    ) -> Float[Array, "n k"]:
        """The base model with ``plan`` applied: each compressible layer is the output of its
        technique (``lax.switch``: one branch runs per plan), fed only the channels its input
        group keeps (the group's root decided them; removed channels are zeroed at the input,
        so what a batch norm or a residual add does to them does not matter). ``correct``
        (default: the environment's): each compressed layer's output is mapped per channel to
        the original layer's mean and standard deviation (``params.correction``), a score
        only: the materialized model is the uncorrected simulation. ``post(layer, y, t, r) -> y``
        replaces that map (:func:`envs.probes.adaptive_logits`)."""
        if post is None and (self.correct if correct is None else correct):
            post = lambda layer, y, t, r: affine(y, params.correction[layer.index][t, r])  # noqa: E731
        kept: dict[int, Array] = {}

        def hook(layer, h: ArrayLike):
            in_keep = kept.get(layer.in_group)
            if in_keep is None:
                in_keep = jnp.ones(layer.in_channels, bool)
            else:
                h = h * jnp.tile(in_keep, layer.in_positions).astype(h.dtype)
            t, r = plan[layer.index, 0], plan[layer.index, 1]
            aux = params.aux[layer.index]
            branches = [self._branch(tech, layer, aux) for tech in self.techniques]
            p = self.network.layer_params(params.base_params, layer)
            y, out_keep = jax.lax.switch(t, branches, p, params.ratios[r], h, in_keep)
            y = y if post is None else post(layer, y, t, r)
            if layer.out_group >= 0:
                kept[layer.out_group] = out_keep
            return y

        return self.network.forward(params.base_params, x, hook)

    @staticmethod
    def _branch(tech: Technique, layer, aux: dict):
        if tech.name not in aux:  # does not fit this layer: never chosen (masked); identity

            def identity(p, ratio, x, in_keep):
                return apply_op(layer.op, {layer.name: p}, x), jnp.ones(layer.features, bool)

            return identity
        a = aux[tech.name]

        def branch(p, ratio, x, in_keep):
            y = layer_forward(tech, layer, p, a, ratio, x, in_keep)
            return y, layer_out_mask(tech, layer, a, ratio)

        return branch

    def accuracy(self, plan: Int[ArrayLike, "L 2"], params: EnvParams) -> Float[Array, ""]:
        """Validation accuracy of the simulated plan (examples labelled -1 pad a split over
        devices and do not count: :mod:`autocomp.sharding`)."""
        pred = jnp.argmax(self.logits(plan, params, params.x_val), axis=-1)
        return labelled_accuracy(pred, params.y_val)

    def _finish_batch(self, plans, spent, params: EnvParams, full: bool):
        """(reward, accuracy, violation) [B] of finished plans, raced unless ``full``."""
        batch, n = plans.shape[0], params.x_val.shape[0]
        keep = min(batch, max(1, math.ceil(self.race_keep * batch)))
        if full or self.race_examples <= 0 or self.race_examples >= n or keep >= batch:
            return jax.lax.map(lambda xs: self._finish(xs[0], xs[1], params), (plans, spent))
        return race_batch(self.logits, plans, spent, params, self.race_examples, keep)

    def greedy_tables(
        self, params: EnvParams
    ) -> tuple[Float[Array, "L T R"], Float[Array, "L T R"]]:
        """:func:`envs.greedy.greedy_tables`: per-layer sensitivity and cost shares."""
        return greedy.greedy_tables(params)

    def greedy_fits(self, params: EnvParams, plans: Int[Array, "B L 2"]) -> Bool[Array, " B"]:
        """:func:`envs.greedy.greedy_fits`: plans within every budget by an upper bound."""
        return greedy.greedy_fits(params, plans)

    # ------------------------------------------------------------------- API
    def reset(self, key: Array, params: EnvParams) -> tuple[Observation, EnvState]:
        n_l = self.spec.num_steps
        state = EnvState(
            layer=jnp.int32(0),
            group_bin=jnp.zeros(self.space.num_groups + 1, jnp.int32),
            plan=jnp.zeros((n_l, 2), jnp.int32),
            spent=params.fixed,
            prev_action=jnp.zeros(2, jnp.int32),
        )
        return self._observe(state, params), state

    def action_mask(self, state: EnvState, params: EnvParams) -> Array:
        """bool[T, R]: allowed actions that keep every budget reachable."""
        l = jnp.minimum(state.layer, self.spec.num_steps - 1)
        cost = params.costs[l, :, :, self._in_bin(state, l), :3]  # [T, R, 3]
        rest = params.rest[l + 1][params.out_bin[l]][..., :3]  # [T, R, 3]
        total = state.spent[:3] + cost + rest
        budgets = params.reward.budgets * (1.0 + 1e-6)
        allowed = params.allowed[l]
        feasible = allowed & jnp.all(total <= budgets, axis=-1)
        # No feasible action: allow the ones that overshoot least (the reward penalizes it).
        overshoot = jnp.sum(
            jnp.maximum(total / params.reward.base - budgets / params.reward.base, 0.0), axis=-1
        )
        overshoot = jnp.where(allowed, overshoot, jnp.inf)
        least = allowed & (overshoot <= jnp.min(overshoot))
        return jnp.where(jnp.any(feasible), feasible, least)

    def _transition(self, state: EnvState, action: Array, params: EnvParams):
        mask = self.action_mask(state, params)
        t, r = action[0], action[1]
        n_r = self.spec.num_ratios
        # Projection of a masked action: the same technique at the nearest ratio if allowed,
        # else the nearest allowed action in (technique, ratio) order.
        t_grid, r_grid = jnp.meshgrid(jnp.arange(mask.shape[0]), jnp.arange(n_r), indexing="ij")
        distance = jnp.abs(r_grid - r) + (t_grid != t) * (2 * n_r)
        flat = jnp.argmin(jnp.where(mask, distance, jnp.iinfo(jnp.int32).max).ravel())
        applied = jnp.stack([flat // n_r, flat % n_r]).astype(jnp.int32)
        l = state.layer
        root = jnp.asarray(self.space.root_group)[l]
        out_bin = params.out_bin[l, applied[0], applied[1]]
        out_bin = jnp.where(root < self.space.num_groups, out_bin, 0)
        new_state = EnvState(
            layer=l + 1,
            group_bin=state.group_bin.at[root].set(out_bin),
            plan=state.plan.at[l].set(applied),
            spent=state.spent + params.costs[l, applied[0], applied[1], self._in_bin(state, l)],
            prev_action=applied,
        )
        return new_state, applied

    def _in_bin(self, state: EnvState, l) -> Array:
        """Layer ``l``'s width index in the cost table: the ratio bin its input group kept,
        plus R times the bin its output's group root kept (see ``SearchSpace.costs``)."""
        in_bin = state.group_bin[jnp.asarray(self.space.in_group)[l]]
        follow = state.group_bin[jnp.asarray(self.space.follow_group)[l]]
        return in_bin + len(self.space.ratios) * follow

    def _finish(self, plan: Array, spent: Array, params: EnvParams):
        acc = self.accuracy(plan, params)
        reward, violation = compute_reward(params.reward, acc, spent[:3])
        return reward, acc, violation

    def _info(self, applied, acc, spent, violation) -> StepInfo:
        return StepInfo(applied, acc, spent[..., 0], spent[..., 1], spent[..., 2], violation)

    def step(self, key: Array, state: EnvState, action: Array, params: EnvParams):
        """One layer's decision. Returns (obs, state, reward, done, info)."""
        del key  # deterministic
        new_state, applied = self._transition(state, action, params)
        done = new_state.layer >= self.spec.num_steps
        reward, acc, violation = jax.lax.cond(
            done,
            lambda: self._finish(new_state.plan, new_state.spent, params),
            lambda: (jnp.float32(0.0), jnp.float32(0.0), jnp.bool_(False)),
        )
        info = self._info(applied, acc, new_state.spent, violation)
        return self._observe(new_state, params), new_state, reward, done, info

    def batch_reset(self, keys: Array, params: EnvParams):
        return jax.vmap(self.reset, in_axes=(0, None))(keys, params)

    def batch_step(
        self, keys: Array, state: EnvState, action: Array, params: EnvParams, full: bool = False
    ):
        """``jax.vmap(step)`` for a lockstep batch, with the accuracy of the finished plans
        evaluated by one ``lax.map`` only on the last step (a vmapped ``cond`` would evaluate
        every step, and vmapped convolutions over different weights are slow on XLA:CPU);
        raced (see the class) unless ``full``."""
        del keys
        new_state, applied = jax.vmap(self._transition, in_axes=(0, 0, None))(state, action, params)
        done_all = new_state.layer[0] >= self.spec.num_steps  # lockstep: same for all
        batch = action.shape[0]

        def finish():
            return self._finish_batch(new_state.plan, new_state.spent, params, full)

        def skip():
            return (jnp.zeros(batch), jnp.zeros(batch), jnp.zeros(batch, bool))

        reward, acc, violation = jax.lax.cond(done_all, finish, skip)
        done = jnp.broadcast_to(done_all, (batch,))
        info = self._info(applied, acc, new_state.spent, violation)
        obs = jax.vmap(self._observe, in_axes=(0, None))(new_state, params)
        return obs, new_state, reward, done, info

    @functools.partial(jax.jit, static_argnums=(0, 3))
    def evaluate_plans(
        self, plans: Int[ArrayLike, "B L 2"], params: EnvParams, full: bool = False
    ) -> dict[str, Array]:
        """Score given plans exactly as the search does (a lockstep rollout of fixed actions,
        compiled once as a scan over the layers); ``full``: on the whole validation split,
        even when the environment races."""
        keys = jax.random.split(jax.random.key(0), plans.shape[0])
        _, state = self.batch_reset(keys, params)

        def body(state, actions):
            _, state, reward, _, info = self.batch_step(keys, state, actions, params, full)
            return state, (reward, info)

        state, (rewards, infos) = jax.lax.scan(body, state, jnp.swapaxes(plans, 0, 1))
        reward, info = jax.tree.map(lambda a: a[-1], (rewards, infos))
        return episode_record(state.plan, reward, info)

    def full_scorer(self, params: EnvParams, always: bool = False):
        """What selection re-scores a raced search's plans with (``plans -> metrics`` on the
        whole validation split, on the host); None when the environment does not race, unless
        ``always`` (a joint search's history was scored under older weights)."""
        if self.race_examples <= 0 and not always:
            return None
        return lambda plans: jax.device_get(self.evaluate_plans(plans, params, True))

    def _observe(self, state: EnvState, params: EnvParams) -> Observation:
        n_t, n_r = self.spec.num_techniques, self.spec.num_ratios
        l = jnp.minimum(state.layer, self.spec.num_steps - 1)
        base = params.reward.base
        in_bin = self._in_bin(state, l)
        rest = params.rest[l, in_bin, :3]
        slack = (params.reward.budgets - state.spent[:3] - rest) / base
        features = jnp.concatenate(
            [
                params.static_features[l],
                params.sensitivity[l].ravel(),
                jax.nn.one_hot(in_bin, n_r),
                state.spent[:3] / base,
                rest / base,
                jnp.clip(slack, -1.0, 1.0),
                jax.nn.one_hot(state.prev_action[0], n_t),
                jax.nn.one_hot(state.prev_action[1], n_r),
            ]
        )
        return Observation(features.astype(jnp.float32), self.action_mask(state, params))
