"""The native vector form of :class:`~composition_gym.env.CompositionEnv`: N episodes in numpy arrays.

It is the project's batch engine (evaluation, behaviour-cloning data, group-relative RL sampling).
``gym.make_vec(id, num_envs=N)`` builds it through the ids' ``vector_entry_point``.  A step writes
all N tokens, advances all N grammar states (:meth:`TraceGrammar.advance_batch`), looks all N
masks up in one table and compares all closed segments with their references in a few array
operations.  It restates no rule: problems and their references come from
:class:`~composition_gym.cascade.Problem`, rewards and the final verdict from the single env's
:class:`~composition_gym.cascade.Scorer` (called per ended episode), the oracle from
:func:`composition_gym.expert.next_token`.

Episodes are those of ``SyncVectorEnv`` over the single environment, for the same seeds and
actions: same observations, rewards, terminations, truncations and infos (sub-environment ``i``
of ``reset(seed=s)`` is seeded with ``s + i``; problems come from the same sampler and draws),
except the ``action_mask`` of a row that just ended under ``NEXT_STEP`` (see the class
docstring).  ``tests/composition_gym/test_vector.py`` checks this.

(The file runs past 400 lines because it is one class, the batch engine, whose docstring is its
manual: Gymnasium keeps one environment per file, and so do we.)
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from composition_gym import tokens as T
from composition_gym.cascade import Problem, Score, Scorer, Segment
from composition_gym.env import CompositionEnv
from composition_gym.infos import array_info, episode_status, final_info, reset_info
from composition_gym.expert import next_token
from composition_gym.grammar import EOS_EVENT, LETTER_EVENT, STEP_EVENT, TAG_EVENT, VALUE, TraceStates


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
    episode) or only by ``reset(options={"reset_mask": mask})`` (``DISABLED``; stepping an ended
    row raises until then).

    Under ``NEXT_STEP`` the ``action_mask`` of a row whose episode just ended is the mask of a
    trace's first token, never empty, so a policy can sample every row (the sampled token is
    ignored).  The single environment's final mask is that of its last state instead (empty after
    ``<eos>``); this is the one way the infos differ from ``SyncVectorEnv``'s.
    :meth:`expert_actions` gives ``<pad>`` for such rows.

    ## Info

    Batched like Gymnasium's ``SyncVectorEnv``: every key of the single environment's ``info``
    becomes an array over sub-environments with a boolean ``"_key"`` array saying which hold it.
    ``info["action_mask"]`` is ``(num_envs, V)``.  Rows that ended hold the final keys
    (``is_success``, ``all_steps_correct``, ``malformed``, ``diagnosis``, ``trace``, …).

    With ``info_mode="arrays"`` (:func:`composition_gym.infos.array_info`) every key is present for
    every row at every step, as a fixed-shape array (``(num_envs,)`` or ``(num_envs, D)``), and no
    Python object or text is in it: what TorchRL's ``GymWrapper``, Tianshou-style collectors and
    ``gymnasium.wrappers.vector`` batch without help.  A step builds these arrays from the batch
    state directly (no per-row dict), except ``final_info`` under ``SAME_STEP``.

    ## Methods

    ``action_masks()``, ``expert_actions()``, ``problems`` (each row's hidden problem), and
    ``call`` / ``get_attr`` / ``set_attr`` as in ``SyncVectorEnv`` (per-episode names
    ``action_masks``, ``expert_action``, ``problem``, ``render``; shared settings such as
    ``max_len``; ``set_attr`` for ``process_reward`` / ``format_penalty``, equal for all rows).

    ## Arguments

    ```python
    gym.make_vec("composition_gym/Compose-L3-v0", num_envs=256)   # vector_entry_point (default)
    CompositionVectorEnv(num_envs=256, autoreset_mode=AutoresetMode.NEXT_STEP, **env_kwargs)
    ```

    ``env_kwargs`` are :class:`~composition_gym.env.CompositionEnv`'s (``profile``, ``depth``,
    ``split``, ``trace_format``, ``process_reward``, ``format_penalty``, ``max_len``, …).

    ``render_mode``: ``None``, ``"ansi"`` (``render()`` returns one text frame per row),
    ``"human"`` (frames printed at every reset and step) or ``"rgb_array"`` (one image per row, as
    ``SyncVectorEnv.render`` returns).

    ``autoreset_mode`` is a keyword of ``gym.make_vec`` itself (``gym.make_vec(id, n,
    autoreset_mode="SameStep")``): Gymnasium refuses ``vector_kwargs`` for every vector entry
    point (they are ``SyncVectorEnv``'s and ``AsyncVectorEnv``'s arguments).

    ## Version History

    * v0: initial release.  Later additions leave v0 episodes unchanged: ``all_steps_correct``,
      non-empty masks for just-ended rows under ``NEXT_STEP``, ``call`` / ``get_attr`` /
      ``set_attr``, ``render_mode="human"``, ``render_mode="rgb_array"``, ``info_mode="arrays"``.
    """

    metadata = {"render_modes": ["ansi", "human", "rgb_array"], "autoreset_mode": AutoresetMode.NEXT_STEP}

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
        # One single environment validates the kwargs and lends its sampler, grammar, scorer and spaces.
        self._template = env = CompositionEnv(render_mode=render_mode, **env_kwargs)
        self.num_envs = n = int(num_envs)
        self.autoreset_mode = autoreset_mode
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.render_mode = render_mode
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        self.observation_space = batch_space(env.observation_space, n)
        self.action_space = batch_space(env.action_space, n)

        self.profile, self.max_len, self.grammar = env.profile, env.max_len, env.grammar
        self._sampler, self._uses_y, self._prompt_format = env.sampler, env.profile.uses_y, env.prompt_format
        self._cap = cap = env.profile.max_result_len
        self._segments = s = 1 if self.grammar.answer_only else max(env.support.depths)

        # Per sub-environment: the episode's problem, its reference segments, generator and prompt text.
        self._problems: list[Problem | None] = [None] * n
        self._expected: list[list[Segment]] = [[] for _ in range(n)]
        self._generators: list[np.random.Generator | _Pending | None] = [None] * n
        self._prompt_text: list[str] = [""] * n
        # The token sequence and the grammar state of every trace.
        self._obs = np.zeros((n, self.max_len), dtype=np.int64)
        self._pos = np.zeros(n, dtype=np.int64)
        self._trace_start = np.zeros(n, dtype=np.int64)
        self._states = TraceStates.empty(n)
        self._n_segments = np.ones(n, dtype=np.int64)
        self._mask = np.zeros((n, T.VOCAB_SIZE), dtype=bool)
        # The reference letters per segment (padded with <pad>), the open segment, the closed ones.
        self._exp = np.zeros((n, s, cap), dtype=np.int64)
        self._exp_len = np.zeros((n, s), dtype=np.int64)
        self._cur = np.zeros((n, cap), dtype=np.int64)
        self._cur_tags = np.zeros((n, 2), dtype=np.int64)
        self._written = np.zeros(n, dtype=np.int64)
        self._wr = np.zeros((n, s, cap), dtype=np.int64)
        self._wr_len = np.zeros((n, s), dtype=np.int64)
        self._wr_tags = np.zeros((n, s, 2), dtype=np.int64)
        self._malformed = np.zeros(n, dtype=bool)
        self._ended = np.zeros(n, dtype=bool)  # the episode is over; awaits (auto)reset
        self._started = False
        # Per row, for info_mode="arrays" and rgb_array frames: the final score of an ended episode,
        # whether its last token was ungrammatical, its cascade's module ids.
        self._arrays = env.info_mode == "arrays"
        self._info_depth = d = env.info_depth
        self._scores: list[Score | None] = [None] * n
        self._bad_last = np.zeros(n, dtype=bool)
        self._routing_ids = np.zeros((n, d), dtype=np.int64)
        self._skill_ids = np.zeros((n, d), dtype=np.int64)
        self._depth = np.zeros(n, dtype=np.int64)

    @property
    def scorer(self) -> Scorer:
        """The :class:`~composition_gym.cascade.Scorer` of every sub-environment (the single env's)."""
        return self._template.scorer

    @property
    def trace_format(self) -> str:
        """The trace format of every sub-environment (reward settings: ``get_attr`` or :attr:`scorer`)."""
        return self.scorer.trace_format

    # ------------------------------------------------------------------ SyncVectorEnv-style access
    _SETTABLE = ("process_reward", "format_penalty")

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """What ``SyncVectorEnv.call(name, …)`` returns: one result per sub-environment.

        The sub-environments are rows of arrays, not objects, so ``name`` is one of the per-episode
        methods and attributes ``action_masks``, ``expert_action``, ``problem``, ``render``, or a
        setting shared by all (any non-callable attribute of the single env: ``max_len``,
        ``trace_format``, ``profile``, ``support``, ``spec``, …).
        """
        per_row = {
            "action_masks": lambda: tuple(self.action_masks()),
            "expert_action": lambda: tuple(self.expert_actions().tolist()),
            "problem": lambda: tuple(self._problems),
            "render": lambda: self.render() if self.render_mode in ("ansi", "rgb_array") else (None,) * self.num_envs,
        }
        if name in per_row:
            if args or kwargs:
                raise TypeError(f"call({name!r}) takes no arguments")
            return per_row[name]()
        value = getattr(self._template, name)
        if callable(value):
            raise AttributeError(f"call({name!r}) is not supported by the native vector env; per sub-environment "
                                 f"it offers {sorted(per_row)} and the non-callable settings of the single env")
        return (value,) * self.num_envs

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """``SyncVectorEnv.get_attr``: the attribute per sub-environment (see :meth:`call`)."""
        return self.call(name)

    def set_attr(self, name: str, values: Any) -> None:
        """``SyncVectorEnv.set_attr`` for the reward settings shared by every row (one scorer).

        ``name`` is ``"process_reward"`` or ``"format_penalty"``; ``values`` is one value or one per
        sub-environment, all equal.
        """
        if name not in self._SETTABLE:
            raise AttributeError(f"set_attr({name!r}) is not supported; settable: {list(self._SETTABLE)}")
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr needs one value or {self.num_envs} values, got {len(values)}")
        if any(v != values[0] for v in values):
            raise ValueError(f"set_attr({name!r}) needs equal values: every sub-environment shares one scorer")
        setattr(self._template, name, values[0])

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset every sub-environment (or those of ``options["reset_mask"]``).

        Args:
            seed: ``None``; an int ``s`` (sub-environment ``i`` gets ``s + i``); or one per
                sub-environment.
            options: ``"reset_mask"``: bool array ``(num_envs,)``, which to reset;
                ``"problem"``: a :class:`~composition_gym.cascade.Problem` every reset
                sub-environment plays, or a list of them, one per reset sub-environment (e.g. a
                group of rows per problem for group-relative RL); drawn problems are still drawn,
                as in the single env, so the seeds' streams stay aligned.
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
        rows = np.arange(n)
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
        problems = [problem] * rows.size if problem is None or isinstance(problem, Problem) else list(problem)
        if len(problems) != rows.size:
            raise ValueError(f"options['problem'] lists {len(problems)} problems for {rows.size} reset "
                             "sub-environments")
        if not all(p is None or isinstance(p, Problem) for p in problems):
            raise TypeError(f"options['problem'] must be a Problem or a list of them, got {problem!r:.80}")
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; known: ['problem', 'reset_mask']")
        self._start_rows(rows, [seeds[i] for i in rows], problems)
        self._started_rows(rows)
        self._started = True
        infos: dict[str, Any] = {}
        self._add_rows(infos, rows, self._reset_infos(rows))
        if self.render_mode == "human":
            self.render()
        return self._obs.copy(), infos

    def _start_rows(self, rows: np.ndarray, seeds: list[int | None],
                    problems: list[Problem | None] | None = None) -> None:
        """Draw a problem for each row (as ``CompositionEnv.reset`` does) and start its episode.

        Rows reset with a seed another row of the same call already drew share that draw (group-
        relative RL resets ``G`` rows per seed).  A seeded row whose draw nobody reads (a repeated
        seed, or a given problem) keeps its generator *pending*, seeded and drawn only if a later
        autoreset needs it: the stream is the single env's either way, without paying for draws
        that are never used.
        """
        s, width = self._segments, self.max_len
        # Ragged per-row data goes into flat lists, then into the arrays in a few scatters.
        prompt_ids: list[int] = []
        prompt_len, seg_len, n_segments, letters_flat = [], [], [], []
        drawn: dict[int, Problem] = {}  # seed -> the problem it drew in this call
        encoded: dict[int, tuple[list[int], str, list[Segment]]] = {}  # id(problem) -> prompt and reference
        for i, seed, given in zip(rows.tolist(), seeds, problems or [None] * rows.size):
            if seed is not None and (given is not None or seed in drawn):
                self._generators[i] = _Pending(seed)
                p = given if given is not None else drawn[seed]
            else:
                if seed is not None or self._generators[i] is None:
                    self._generators[i], _ = seeding.np_random(seed)
                p = self._sampler.sample(self._generator(i))
                if seed is not None:
                    drawn[seed] = p
                if given is not None:
                    p = given
            if id(p) not in encoded:
                ids, text = p.encode_prompt(self._uses_y, self._prompt_format)
                if len(ids) + 2 > width:
                    raise ValueError(f"max_len={width} is too short for a prompt of {len(ids)} tokens")
                expected = p.expected_segments(self.trace_format)
                if len(expected) > s:
                    raise ValueError(f"problem of depth {p.cascade.depth} exceeds this vector env's depth {s}")
                encoded[id(p)] = ids, text, expected
            ids, self._prompt_text[i], expected = encoded[id(p)]
            self._problems[i], self._expected[i] = p, expected
            prompt_ids += ids
            prompt_len.append(len(ids))
            n_segments.append(len(expected))
            for _, letters in expected:
                letters_flat += letters
                seg_len.append(len(letters))
        self._obs[rows] = T.PAD_ID
        self._obs[np.repeat(rows, prompt_len), _ragged_index(prompt_len)] = prompt_ids
        seg_rows, seg_k = np.repeat(rows, n_segments), _ragged_index(n_segments)
        self._exp[rows] = 0
        self._exp_len[rows] = 0
        self._exp_len[seg_rows, seg_k] = seg_len
        self._exp[np.repeat(seg_rows, seg_len), np.repeat(seg_k, seg_len), _ragged_index(seg_len)] = letters_flat
        self._pos[rows] = self._trace_start[rows] = prompt_len
        self._n_segments[rows] = n_segments
        for arr in (self._written, self._cur, self._cur_tags, self._wr, self._wr_len, self._wr_tags):
            arr[rows] = 0
        self._malformed[rows] = self._ended[rows] = False
        self.grammar.start_batch(self._states, rows)
        self._update_masks(rows)

    def _generator(self, i: int) -> np.random.Generator:
        """Row ``i``'s generator, seeded and advanced past its pending draw first if it has one."""
        g = self._generators[i]
        if isinstance(g, _Pending):
            g, _ = seeding.np_random(g.seed)
            self._sampler.sample(g)  # the draw the reset skipped: the stream stays the single env's
            self._generators[i] = g
        return g

    def _update_masks(self, rows: np.ndarray) -> None:
        last = self._states.segment[rows] == self._n_segments[rows] - 1
        self._mask[rows] = self.grammar.mask_batch(self._states, rows, last)

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
        final: list[dict[str, Any]] = []
        if stepping.size:
            correct, malformed, term, trunc = self._advance(stepping, actions[stepping])
            terminated[stepping], truncated[stepping] = term, trunc
            self._bad_last[stepping[malformed & ~trunc]] = True
            ended = stepping[term | trunc]
            final = self._final_infos(ended)
            success = np.zeros(n, dtype=bool)
            success[ended] = [f["is_success"] for f in final]
            rewards[stepping] = self.scorer.step_reward(correct, malformed, success[stepping])
        else:
            ended = stepping
        self._ended[ended] = True

        if mode == AutoresetMode.SAME_STEP and ended.size:
            final_infos: dict[str, Any] = {}
            self._add_rows(final_infos, ended, final)
            self._add_rows(infos, ended, [{"final_obs": obs} for obs in self._obs[ended].copy()])
            infos["final_info"] = final_infos
            infos["_final_info"] = infos["_final_obs"].copy()
            self._start_rows(ended, [None] * ended.size)
            self._started_rows(ended)
            if not self._arrays:
                self._add_rows(infos, ended, self._reset_infos(ended))
        elif ended.size:
            if not self._arrays:
                self._add_rows(infos, ended, final)
            if mode == AutoresetMode.NEXT_STEP:
                # Their next action is ignored (they are reset then), but a sampler still needs a
                # non-empty mask: give them the mask of a trace's first token.
                self._mask[ended] = self.grammar.start_mask()
        if resetting.any():
            rows = np.flatnonzero(resetting)
            self._start_rows(rows, [None] * rows.size)
            self._started_rows(rows)
            if not self._arrays:
                self._add_rows(infos, rows, self._reset_infos(rows))
        if self._arrays:
            infos.update(self._array_infos())
        infos["action_mask"] = self._mask.copy()
        infos["_action_mask"] = np.ones(n, dtype=bool)
        if self.render_mode == "human":
            self.render()
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

    def _advance(self, idx: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, ...]:
        """One token for the rows ``idx``: the batched ``CompositionEnv.step`` bookkeeping.

        Returns, per row: closed an intermediate segment equal to its reference, malformed now,
        terminated, truncated (the scorer turns these into rewards).
        """
        pos = self._pos[idx]
        self._obs[idx, pos] = a
        pos += 1
        self._pos[idx] = pos
        valid = self._mask[idx, a]
        valid_at = np.flatnonzero(valid)
        rows, tok = idx[valid_at], a[valid_at]
        letters_before = self._states.letters[rows]
        events = self.grammar.advance_batch(self._states, rows, tok)

        tag = events == TAG_EVENT  # the routing (slot 0) or skill (slot 1); the phase moved past it
        self._cur_tags[rows[tag], self._states.phase[rows[tag]] - 1] = tok[tag]
        letter = events == LETTER_EVENT
        self._cur[rows[letter], letters_before[letter]] = tok[letter]

        correct = np.zeros(idx.size, dtype=bool)
        closing = events >= STEP_EVENT
        if closing.any():
            closed, n_letters = rows[closing], letters_before[closing]
            k = self._written[closed]
            same = (n_letters == self._exp_len[closed, k]) & (self._cur[closed] == self._exp[closed, k]).all(axis=1)
            self._wr[closed, k] = self._cur[closed]
            self._wr_len[closed, k] = n_letters
            self._wr_tags[closed, k] = self._cur_tags[closed]
            self._written[closed] = k + 1
            self._cur[closed] = T.PAD_ID
            self._cur_tags[closed] = 0
            correct[valid_at[closing]] = same & (k < self._n_segments[closed] - 1)

        terminated = ~valid
        terminated[valid_at[events == EOS_EVENT]] = True
        truncated = ~terminated & (pos >= self.max_len)
        malformed = ~valid | truncated
        self._malformed[idx[malformed]] = True
        self._update_masks(idx)
        return correct, malformed, terminated, truncated

    # ------------------------------------------------------------------ info
    def _add_rows(self, infos: dict[str, Any], rows: np.ndarray, values: list[dict[str, Any]]) -> None:
        """Batch one info dict per row into ``infos`` exactly as ``VectorEnv._add_info`` does, key by key."""
        n = self.num_envs
        rows = rows.tolist()
        for key in values[0] if values else ():
            column = [v[key] for v in values]
            if key not in infos:
                first = column[0]
                if isinstance(first, np.ndarray) and key != "final_obs":
                    infos[key] = np.zeros((n, *first.shape), dtype=first.dtype)
                elif type(first) in (int, float, bool) or isinstance(first, np.number):
                    infos[key] = np.zeros(n, dtype=type(first))
                else:  # final_obs too: Gymnasium keeps it as an object array of observations
                    infos[key] = np.full(n, None, dtype=object)
                infos["_" + key] = np.zeros(n, dtype=bool)
            array = infos[key]
            if array.dtype == object:
                for i, v in zip(rows, column):
                    array[i] = v
            else:
                array[rows] = column
            infos["_" + key][rows] = True

    def _reset_infos(self, rows: np.ndarray) -> list[dict[str, Any]]:
        if self._arrays:
            return [array_info(self._mask[i], self._problems[i], [], None, self._info_depth) for i in rows.tolist()]
        return [{"action_mask": self._mask[i], **reset_info(self._problems[i], self._prompt_text[i])}
                for i in rows.tolist()]

    def _final_infos(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """The single environment's final info of each row, from the shared scorer."""
        out = []
        closed = self._closed_correct() if self._arrays and rows.size else None
        for i in rows.tolist():
            k = int(self._written[i])
            written = [(tuple(self._wr_tags[i, j].tolist()) if self.grammar.tagged else (),
                        tuple(self._wr[i, j, : self._wr_len[i, j]].tolist())) for j in range(k)]
            self._scores[i] = score = self.scorer.score(self._problems[i], written, bool(self._malformed[i]))
            if self._arrays:
                out.append(array_info(self._mask[i], self._problems[i], closed[i, :k].tolist(), score,
                                      self._info_depth))
            else:
                out.append({"action_mask": self._mask[i].copy(),
                            **final_info(self._problems[i], self._prompt_text[i], score, self._trace_text(i))})
        return out

    def _started_rows(self, rows: np.ndarray) -> None:
        """Per-episode facts of the rows just (re)started, for ``info_mode="arrays"`` and frames."""
        self._bad_last[rows] = False
        self._routing_ids[rows] = 0
        self._skill_ids[rows] = 0
        for i in rows.tolist():
            self._scores[i] = None
            cascade = self._problems[i].cascade
            self._depth[i] = cascade.depth
            self._routing_ids[i, : cascade.depth] = [T.ROUTING_IDS[r] for r in cascade.routings]
            self._skill_ids[i, : cascade.depth] = [T.SKILL_IDS[s] for s in cascade.skills]

    def _closed_correct(self) -> np.ndarray:
        """``(num_envs, segments)``: segment ``k`` of the row is closed and equals its reference."""
        closed = np.arange(self._segments) < self._written[:, None]
        return closed & (self._wr_len == self._exp_len) & (self._wr == self._exp).all(axis=2)

    def _array_infos(self) -> dict[str, Any]:
        """Every row's :func:`~composition_gym.infos.array_info`, built as arrays (all rows hold every key)."""
        n = self.num_envs
        step_correct = np.zeros((n, self._info_depth), dtype=bool)
        step_correct[:, : self._segments] = self._closed_correct()
        outcome = np.zeros((n, 3), dtype=bool)
        for i, score in enumerate(self._scores):
            if score is not None:
                outcome[i] = score.is_success, score.all_steps_correct, score.malformed
        infos = {"is_success": outcome[:, 0], "all_steps_correct": outcome[:, 1], "malformed": outcome[:, 2],
                 "depth": self._depth.copy(), "steps_written": self._written.copy(), "step_correct": step_correct,
                 "routing_ids": self._routing_ids.copy(), "skill_ids": self._skill_ids.copy()}
        for key in list(infos):
            infos["_" + key] = np.ones(n, dtype=bool)
        return infos

    def _trace_text(self, i: int) -> str:
        """``T.decode`` of sub-environment ``i``'s trace so far."""
        ids = self._obs[i, self._trace_start[i] : self._pos[i]].tolist()
        if self.grammar.tagged:
            return T.decode(ids)
        # Without tags a word can only be the last token (an ungrammatical one), so no word is ever
        # followed by a letter and decode's spacing never applies: plain concatenation is exact.
        return "".join(map(_TEXT.__getitem__, ids))

    # ------------------------------------------------------------------ helpers
    def action_masks(self) -> np.ndarray:
        """``(num_envs, V)`` grammatical next tokens (sb3-contrib's convention, batched)."""
        return self._mask.copy()

    def expert_actions(self) -> np.ndarray:
        """The oracle's next token per sub-environment (:func:`composition_gym.expert.next_token`).

        Sub-environments whose episode has ended (awaiting autoreset) get ``<pad>`` (0): under
        ``NEXT_STEP`` their action is ignored.
        """
        if not self._started:
            raise RuntimeError("expert_actions() called before reset()")
        st = self._states
        out = np.zeros(self.num_envs, dtype=np.int64)  # <pad>
        live = np.flatnonzero(~(self._ended | st.done))
        expected = self._expected
        out[live] = [
            next_token(phase, segment == len(expected[i]) - 1, cur[:letters] if phase == VALUE else (),
                       expected[i][segment])
            for i, phase, segment, letters, cur in zip(live.tolist(), st.phase[live].tolist(),
                                                      st.segment[live].tolist(), st.letters[live].tolist(),
                                                      self._cur[live].tolist())
        ]
        return out

    @property
    def problems(self) -> list[Problem | None]:
        """Each sub-environment's current problem (hidden from the agent)."""
        return list(self._problems)

    def render(self) -> tuple[str, ...] | tuple[np.ndarray, ...] | None:
        """Each sub-environment's frame: text (``"ansi"``), printed (``"human"``) or an image (``"rgb_array"``)."""
        if self.render_mode is None:
            return None
        if self.render_mode == "rgb_array":
            return self._frames()
        out = []
        for i, p in enumerate(self._problems):
            if p is None:
                out.append("(call reset() first)")
                continue
            trace = self._trace_text(i)
            out.append(f"{self._prompt_text[i]}\n  trace: {trace}\n  cascade: {p.cascade.key()}\n")
        if self.render_mode == "human":
            sys.stdout.write("".join(f"[{i}] {frame}" for i, frame in enumerate(out)))
            return None
        return tuple(out)


    def _frames(self) -> tuple[np.ndarray, ...]:
        from composition_gym.render import FrameRenderer, TraceView  # on the first frame: start-up speed (Pillow)

        renderer = self._template._renderer
        if renderer is None:
            renderer = self._template._renderer = FrameRenderer.for_env(self.profile, self._info_depth, self.max_len)
        closed = self._closed_correct()
        frames = []
        for i, p in enumerate(self._problems):
            if p is None:
                frames.append(renderer.draw(TraceView("(call reset() first)", (), (), "", "")))
                continue
            k = int(self._written[i])
            view = TraceView(self._prompt_text[i], self._obs[i, self._trace_start[i] : self._pos[i]].tolist(),
                             closed[i, :k].tolist(), p.cascade.key(),
                             episode_status(self._scores[i], k, int(self._n_segments[i])), bool(self._bad_last[i]))
            frames.append(renderer.draw(view))
        return tuple(frames)


_TEXT = ("",) + T.TOKENS[1:]  # token texts as decode writes them (<pad> is skipped)


class _Pending(NamedTuple):
    """A row's generator not built yet: ``np_random(seed)`` advanced by one problem draw."""

    seed: int


def _ragged_index(lengths: list[int]) -> np.ndarray:
    """``[0..l0-1, 0..l1-1, …]``: the position of each element inside its run."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    return np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
