"""The native vector form of :class:`~composition_gym.env.CompositionEnv`: N episodes in numpy arrays.

``gym.make_vec(id, num_envs=N)`` builds it through the ids' ``vector_entry_point``.  A step writes
all N tokens, advances all N grammar states, looks all N masks up in one table and compares all
closed segments with their references in a few array operations; only what is per episode by
nature (sampling a problem, the final ``diagnosis`` and ``trace`` text) runs per sub-environment.

Episodes are those of ``SyncVectorEnv`` over the single environment, for the same seeds and
actions: same observations, rewards, terminations, truncations and infos (sub-environment ``i``
of ``reset(seed=s)`` is seeded with ``s + i``; problems come from the same sampler and draws).  ``tests/composition_gym/test_vector.py`` checks this.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from composition_gym import tokens as T
from composition_gym.cascade import Problem
from composition_gym.env import CompositionEnv, encode_prompt, expected_segments
from composition_gym.grammar import COLON, ROUTING, SKILL, VALUE, mask_index


class CompositionVectorEnv(VectorEnv):
    """``num_envs`` independent :class:`~composition_gym.env.CompositionEnv` episodes, batched.

    ## Description

    The same task as :class:`~composition_gym.env.CompositionEnv` (read its docstring), stepped
    for all sub-environments at once with numpy operations.

    ## Action Space

    ``MultiDiscrete([V] * num_envs)``: one token id per sub-environment.  :meth:`action_masks`
    gives the ``(num_envs, V)`` grammatical tokens, :meth:`expert_actions` the oracle's tokens.

    ## Observation Space

    ``Box(0, V-1, (num_envs, max_len), int64)``.

    ## Rewards, Starting State, Episode End

    As in the single environment, per sub-environment.  After an episode ends, the sub-environment
    is reset following ``autoreset_mode`` (``metadata["autoreset_mode"]``): on the next step
    (``NEXT_STEP``, the default; that step's action is ignored and its reward is 0), within the
    same step (``SAME_STEP``: ``info["final_obs"]``/``info["final_info"]`` hold the ended
    episode) or only by ``reset(options={"reset_mask": mask})`` (``DISABLED``).

    ## Info

    Batched like Gymnasium's ``SyncVectorEnv``: every key of the single environment's ``info``
    becomes an array over sub-environments with a boolean ``"_key"`` array saying which hold it.
    ``info["action_mask"]`` is ``(num_envs, V)``.

    ## Arguments

    ```python
    gym.make_vec("composition_gym/Compose-L3-v0", num_envs=256)   # vector_entry_point (default)
    CompositionVectorEnv(num_envs=256, autoreset_mode=AutoresetMode.NEXT_STEP, **env_kwargs)
    ```

    ``env_kwargs`` are :class:`~composition_gym.env.CompositionEnv`'s (``profile``, ``depth``,
    ``split``, ``trace_format``, ``process_reward``, ``format_penalty``, ``max_len``, …).

    ## Version History

    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if "max_episode_steps" in env_kwargs:
            raise ValueError("max_episode_steps is not supported: episodes end at <eos>, at an ungrammatical "
                             "token or when the observation is full (set max_len instead)")
        try:
            autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(f"unknown autoreset_mode {autoreset_mode!r}; choose from "
                             f"{[m.value for m in AutoresetMode]}") from None
        # One single environment validates the kwargs and lends its sampler, grammar and spaces.
        self._template = env = CompositionEnv(render_mode=render_mode, **env_kwargs)
        self.num_envs = n = int(num_envs)
        self.autoreset_mode = autoreset_mode
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.render_mode = render_mode
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        self.observation_space = batch_space(env.observation_space, n)
        self.action_space = batch_space(env.action_space, n)

        self.profile, self.trace_format = env.profile, env.trace_format
        self.max_len, self.process_reward, self.format_penalty = env.max_len, env.process_reward, env.format_penalty
        self._sampler, self._uses_y = env.sampler, env.profile.uses_y
        self._tagged, self._answer_only = env.grammar.tagged, env.grammar.answer_only
        self._start_phase = ROUTING if self._tagged else VALUE
        self._cap = cap = env.profile.max_result_len
        self._segments = s = 1 if self._answer_only else max(env.support.depths)
        self._table = env.grammar.mask_table()

        # Per sub-environment: the episode's problem, its generator and draw stream.
        self._problems: list[Problem | None] = [None] * n
        self._generators: list[np.random.Generator | None] = [None] * n
        self._prompt_text: list[str] = [""] * n
        # The token sequence and the grammar state (TraceState, as arrays).
        self._obs = np.zeros((n, self.max_len), dtype=np.int64)
        self._pos = np.zeros(n, dtype=np.int64)
        self._trace_start = np.zeros(n, dtype=np.int64)
        self._segment = np.zeros(n, dtype=np.int64)
        self._phase = np.zeros(n, dtype=np.int64)
        self._letters = np.zeros(n, dtype=np.int64)
        self._eos = np.zeros(n, dtype=bool)
        self._n_segments = np.ones(n, dtype=np.int64)
        self._mask = np.zeros((n, T.VOCAB_SIZE), dtype=bool)
        # The reference segments (letters padded with <pad>) and what has been written so far.
        self._exp = np.zeros((n, s, cap), dtype=np.int64)
        self._exp_len = np.zeros((n, s), dtype=np.int64)
        self._exp_tags = np.zeros((n, s, 2), dtype=np.int64)
        self._cur = np.zeros((n, cap), dtype=np.int64)
        self._cur_tags = np.zeros((n, 2), dtype=np.int64)
        self._written = np.zeros(n, dtype=np.int64)
        self._wr = np.zeros((n, s, cap), dtype=np.int64)
        self._wr_len = np.zeros((n, s), dtype=np.int64)
        self._wr_ok = np.zeros((n, s), dtype=bool)
        self._wr_tags_ok = np.zeros((n, s), dtype=bool)
        self._malformed = np.zeros(n, dtype=bool)
        self._ended = np.zeros(n, dtype=bool)  # the episode is over; awaits (auto)reset
        self._started = False
        self._rows = np.arange(n)

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset every sub-environment (or those of ``options["reset_mask"]``).

        Args:
            seed: ``None``; an int ``s`` (sub-environment ``i`` gets ``s + i``); or one per
                sub-environment.
            options: ``"reset_mask"``: bool array ``(num_envs,)``, which to reset;
                ``"problem"``: a :class:`~composition_gym.cascade.Problem` every reset
                sub-environment plays (drawn problems are still drawn, as in the single env).
        """
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(n)]
        elif isinstance(seed, (list, tuple)) and len(seed) == n:
            seeds = list(seed)
        else:
            raise ValueError(f"seed must be None, an int or a list of {n} seeds, got {seed!r}")
        options = dict(options or {})
        rows = self._rows
        if "reset_mask" in options:
            mask = options.pop("reset_mask")
            if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (n,):
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({n},), got {mask!r}")
            if not mask.any():
                raise ValueError("options['reset_mask'] selects no sub-environment")
            if not self._started and not mask.all():
                raise RuntimeError("the first reset() must reset every sub-environment")
            rows = np.flatnonzero(mask)
        problem = options.pop("problem", None)
        if problem is not None and not isinstance(problem, Problem):
            raise TypeError(f"options['problem'] must be a Problem, got {type(problem).__name__}")
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; known: ['problem', 'reset_mask']")
        self._start_rows(rows, [seeds[i] for i in rows], problem)
        self._started = True
        infos: dict[str, Any] = {}
        self._add_rows(infos, "action_mask", rows, self._mask[rows])
        self._add_reset_info(infos, rows)
        return self._obs.copy(), infos

    def _start_rows(self, rows: np.ndarray, seeds: list[int | None], problem: Problem | None = None) -> None:
        """Draw a problem for each row (as ``CompositionEnv.reset`` does) and start its episode."""
        s, width = self._segments, self.max_len
        # Ragged per-row data goes into flat lists, then into the arrays in a few scatters.
        prompt_ids: list[int] = []
        prompt_len, seg_len, n_segments, letters_flat, tags_flat = [], [], [], [], []
        for i, seed in zip(rows.tolist(), seeds):
            if seed is not None or self._generators[i] is None:
                self._generators[i], _ = seeding.np_random(seed)
            p = self._sampler.sample(self._generators[i])
            if problem is not None:
                p = problem
            ids, self._prompt_text[i] = encode_prompt(p, self._uses_y)
            if len(ids) + 2 > width:
                raise ValueError(f"max_len={width} is too short for a prompt of {len(ids)} tokens")
            expected = expected_segments(p, self.trace_format)
            if len(expected) > s:
                raise ValueError(f"problem of depth {p.cascade.depth} exceeds this vector env's depth {s}")
            self._problems[i] = p
            prompt_ids += ids
            prompt_len.append(len(ids))
            n_segments.append(len(expected))
            for tag, letters in expected:
                tags_flat += tag
                letters_flat += letters
                seg_len.append(len(letters))
        self._obs[rows] = T.PAD_ID
        self._obs[np.repeat(rows, prompt_len), _ragged_index(prompt_len)] = prompt_ids
        seg_rows, seg_k = np.repeat(rows, n_segments), _ragged_index(n_segments)
        for arr in (self._exp, self._exp_len, self._exp_tags):
            arr[rows] = 0
        self._exp_len[seg_rows, seg_k] = seg_len
        self._exp_tags[seg_rows, seg_k] = np.asarray(tags_flat, dtype=np.int64).reshape(-1, 2)
        self._exp[np.repeat(seg_rows, seg_len), np.repeat(seg_k, seg_len), _ragged_index(seg_len)] = letters_flat
        self._pos[rows] = self._trace_start[rows] = prompt_len
        self._n_segments[rows] = n_segments
        for arr in (self._segment, self._letters, self._written, self._cur, self._cur_tags,
                    self._wr, self._wr_len):
            arr[rows] = 0
        for arr in (self._eos, self._wr_ok, self._wr_tags_ok, self._malformed, self._ended):
            arr[rows] = False
        self._phase[rows] = self._start_phase
        self._update_masks(rows)

    def _update_masks(self, rows: np.ndarray) -> None:
        letters = self._letters[rows]
        last = self._segment[rows] == self._n_segments[rows] - 1
        self._mask[rows] = self._table[mask_index(self._phase[rows], letters == 0, letters >= self._cap, last,
                                                  self._eos[rows])]

    # ------------------------------------------------------------------ step
    def step(self, actions):
        """Step every sub-environment with its token; see the class docstring for autoreset."""
        if not self._started:
            raise RuntimeError("step() called before reset()")
        actions = self._check_actions(actions)
        n = self.num_envs
        rewards = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        infos: dict[str, Any] = {}
        mode = self.autoreset_mode
        resetting = self._ended.copy() if mode == AutoresetMode.NEXT_STEP else np.zeros(n, dtype=bool)
        if mode == AutoresetMode.DISABLED and self._ended.any():
            raise RuntimeError(f"sub-environment(s) {np.flatnonzero(self._ended).tolist()} ended: with "
                               "autoreset_mode DISABLED, reset them with reset(options={'reset_mask': ...}) first")
        stepping = np.flatnonzero(~resetting)
        if stepping.size:
            rewards[stepping], terminated[stepping], truncated[stepping] = self._advance(stepping, actions[stepping])
        ended = np.flatnonzero(terminated | truncated)
        self._ended[ended] = True

        if mode == AutoresetMode.SAME_STEP and ended.size:
            final: dict[str, Any] = {}
            self._add_rows(final, "action_mask", ended, self._mask[ended])
            self._add_final_info(final, ended)
            self._add_rows(infos, "final_obs", ended, list(self._obs[ended].copy()), objects=True)
            infos["final_info"] = final
            infos["_final_info"] = infos["_final_obs"].copy()
            self._start_rows(ended, [None] * ended.size)
            self._add_reset_info(infos, ended)
        elif ended.size:
            self._add_final_info(infos, ended)
        if resetting.any():
            rows = np.flatnonzero(resetting)
            self._start_rows(rows, [None] * rows.size)
            self._add_reset_info(infos, rows)
        infos["action_mask"] = self._mask.copy()
        infos["_action_mask"] = np.ones(n, dtype=bool)
        return self._obs.copy(), rewards, terminated, truncated, infos

    def _check_actions(self, actions) -> np.ndarray:
        arr = np.asarray(actions)
        if arr.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), one token per sub-environment, "
                             f"got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"actions must be integer token ids, got dtype {arr.dtype}")
        live = ~self._ended if self.autoreset_mode == AutoresetMode.NEXT_STEP else True
        bad = np.flatnonzero(((arr < 0) | (arr >= T.VOCAB_SIZE)) & live)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"action {int(arr[i])} of sub-environment {i} is outside Discrete({T.VOCAB_SIZE})")
        return arr.astype(np.int64, copy=False)

    def _advance(self, idx: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One token for the rows ``idx``: the batched ``CompositionEnv.step``."""
        pos = self._pos[idx]
        self._obs[idx, pos] = a
        pos += 1
        self._pos[idx] = pos
        valid = self._mask[idx, a]
        phase = self._phase[idx]
        reward = np.zeros(idx.size, dtype=np.float64)
        in_value = valid & (phase == VALUE)
        closing = in_value & ((a == T.STEP_ID) | (a == T.EOS_ID))
        letter = in_value & ~closing

        tag = valid & ((phase == ROUTING) | (phase == SKILL))
        if tag.any():
            self._cur_tags[idx[tag], phase[tag]] = a[tag]
        tagging = valid & (phase != VALUE)  # routing -> skill -> colon -> value
        self._phase[idx[tagging]] += 1
        if letter.any():
            rows = idx[letter]
            self._cur[rows, self._letters[rows]] = a[letter]
            self._letters[rows] += 1

        eos = closing & (a == T.EOS_ID)
        success = np.zeros(idx.size, dtype=bool)
        if closing.any():
            rows, tok = idx[closing], a[closing]
            k = self._written[rows]
            n_letters = self._letters[rows]
            correct = (n_letters == self._exp_len[rows, k]) & (self._cur[rows] == self._exp[rows, k]).all(axis=1)
            self._wr[rows, k] = self._cur[rows]
            self._wr_len[rows, k] = n_letters
            self._wr_ok[rows, k] = correct
            if self._tagged:
                self._wr_tags_ok[rows, k] = (self._cur_tags[rows] == self._exp_tags[rows, k]).all(axis=1)
            self._written[rows] = k + 1
            reward[closing] += self.process_reward * (correct & (k < self._n_segments[rows] - 1))
            self._cur[rows] = T.PAD_ID
            self._cur_tags[rows] = 0
            nxt = rows[tok == T.STEP_ID]
            self._segment[nxt] += 1
            self._letters[nxt] = 0
            self._phase[nxt] = self._start_phase
            self._eos[idx[eos]] = True
            # <eos> is only grammatical in the last segment, so the closed one is the answer.
            success[closing] = correct & (tok == T.EOS_ID)

        bad = ~valid
        terminated = bad | eos
        truncated = ~terminated & (pos >= self.max_len)
        malformed = bad | truncated
        self._malformed[idx[malformed]] = True
        reward -= self.format_penalty * bad
        reward -= self.format_penalty * truncated
        reward += success
        self._update_masks(idx)
        return reward, terminated, truncated

    # ------------------------------------------------------------------ info
    def _add_rows(self, infos: dict[str, Any], key: str, rows: np.ndarray, values, objects: bool = False) -> None:
        """Set ``infos[key][rows]`` and ``infos["_" + key][rows]`` the way ``VectorEnv._add_info`` batches."""
        n = self.num_envs
        if key not in infos:
            if objects:
                infos[key] = np.full(n, None, dtype=object)
            else:
                values = np.asarray(values)
                infos[key] = np.zeros((n, *values.shape[1:]), dtype=values.dtype)
            infos["_" + key] = np.zeros(n, dtype=bool)
        if objects:
            array = infos[key]
            for i, v in zip(rows.tolist(), values):
                array[i] = v
        else:
            infos[key][rows] = values
        infos["_" + key][rows] = True

    def _add_reset_info(self, infos: dict[str, Any], rows: np.ndarray) -> None:
        problems = [self._problems[i] for i in rows.tolist()]
        self._add_rows(infos, "cascade", rows, [p.cascade for p in problems], objects=True)
        self._add_rows(infos, "prompt", rows, [self._prompt_text[i] for i in rows.tolist()], objects=True)
        self._add_rows(infos, "answer", rows, [p.answer for p in problems], objects=True)

    def _add_final_info(self, infos: dict[str, Any], rows: np.ndarray) -> None:
        self._add_reset_info(infos, rows)
        written = self._written[rows]
        success = ~self._malformed[rows] & (written == self._n_segments[rows])
        last = np.maximum(written - 1, 0)
        success &= self._wr_ok[rows, last]
        self._add_rows(infos, "is_success", rows, success)
        self._add_rows(infos, "malformed", rows, self._malformed[rows].copy())
        diagnoses, traces = [], []
        wr, wr_len = self._wr[rows].tolist(), self._wr_len[rows].tolist()
        wr_ok, tags_ok = self._wr_ok[rows].tolist(), self._wr_tags_ok[rows].tolist()
        for j, i in enumerate(rows.tolist()):
            diagnoses.append(self._diagnosis(i, int(written[j]), wr[j], wr_len[j], wr_ok[j], tags_ok[j]))
            traces.append(self._trace_text(i))
        self._add_rows(infos, "diagnosis", rows, diagnoses, objects=True)
        self._add_rows(infos, "trace", rows, traces, objects=True)

    def _trace_text(self, i: int) -> str:
        """``T.decode`` of sub-environment ``i``'s trace so far."""
        ids = self._obs[i, self._trace_start[i] : self._pos[i]].tolist()
        if self._tagged:
            return T.decode(ids)
        # Without tags a word can only be the last token (an ungrammatical one), so no word is ever
        # followed by a letter and decode's spacing never applies: plain concatenation is exact.
        return "".join(map(_TEXT.__getitem__, ids))

    def _diagnosis(self, i: int, written: int, wr, wr_len, wr_ok, tags_ok) -> list[dict[str, Any]]:
        """``info["diagnosis"]`` of sub-environment ``i``, exactly as the single environment words it."""
        p = self._problems[i]
        steps = list(zip(p.cascade.steps, p.values))
        depth = len(steps)
        if self._answer_only:
            steps = steps[-1:]
        out = []
        for k, ((r, s), z) in enumerate(steps):
            got = k < written
            item = {
                "step": depth if self._answer_only else k + 1,
                "routing": r,
                "skill": s,
                "expected": z,
                "generated": "".join(map(_TEXT.__getitem__, wr[k][: wr_len[k]])) if got else None,
                "correct": got and wr_ok[k],
            }
            if self._tagged:
                item["tags_correct"] = got and tags_ok[k]
            out.append(item)
        return out

    # ------------------------------------------------------------------ helpers
    def action_masks(self) -> np.ndarray:
        """``(num_envs, V)`` grammatical next tokens (sb3-contrib's convention, batched)."""
        return self._mask.copy()

    def expert_actions(self) -> np.ndarray:
        """The oracle's next token per sub-environment, as ``CompositionEnv.expert_action``.

        Sub-environments whose episode has ended (awaiting autoreset) get ``<pad>`` (0): under
        ``NEXT_STEP`` their action is ignored.
        """
        if not self._started:
            raise RuntimeError("expert_actions() called before reset()")
        rows = self._rows
        seg = np.minimum(self._segment, self._segments - 1)
        n = self._letters
        exp = self._exp[rows, seg]
        exp_len = self._exp_len[rows, seg]
        within = np.arange(self._cap)[None, :] < n[:, None]
        on_path = (n < exp_len) & ((self._cur == exp) | ~within).all(axis=1)
        next_letter = exp[rows, np.minimum(n, self._cap - 1)]
        close = np.where(seg == self._n_segments - 1, T.EOS_ID, T.STEP_ID)
        out = np.where(on_path, next_letter, close)
        tags = self._exp_tags[rows, seg]
        out = np.where(self._phase == ROUTING, tags[:, 0], out)
        out = np.where(self._phase == SKILL, tags[:, 1], out)
        out = np.where(self._phase == COLON, T.TAG_ID, out)
        return np.where(self._ended | self._eos, T.PAD_ID, out).astype(np.int64)

    @property
    def problems(self) -> list[Problem | None]:
        """Each sub-environment's current problem (hidden from the agent)."""
        return list(self._problems)

    def render(self) -> tuple[str, ...] | None:
        """With ``render_mode="ansi"``, each sub-environment's prompt, trace and cascade."""
        if self.render_mode != "ansi":
            return None
        out = []
        for i, p in enumerate(self._problems):
            if p is None:
                out.append("(call reset() first)")
                continue
            trace = self._trace_text(i)
            out.append(f"{self._prompt_text[i]}\n  trace: {trace}\n  cascade: {p.cascade.key()}\n")
        return tuple(out)


_TEXT = ("",) + T.TOKENS[1:]  # token texts as decode writes them (<pad> is skipped)


def _ragged_index(lengths: list[int]) -> np.ndarray:
    """``[0..l0-1, 0..l1-1, …]``: the position of each element inside its run."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    return np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
