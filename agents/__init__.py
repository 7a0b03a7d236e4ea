"""Agents for composition-gym: a transformer policy, behavior cloning, PPO wiring, plug-in agents
and evaluation.

``import composition_gym.agents`` makes the SB3 policy classes importable, so ``PPO.load`` / ``MaskablePPO.load``
read saved models without ``custom_objects``.
"""

from composition_gym.agents.agent import Agent, LMAgent, RandomAgent, SB3Agent, TextAgent, trace_so_far
from composition_gym.agents.bc import behavior_cloning
from composition_gym.agents.callbacks import CompositionEvalCallback
from composition_gym.agents.evaluation import EvalReport, evaluate
from composition_gym.agents.policy import (
    MaskableTransformerPolicy,
    TransformerActorCriticPolicy,
    TransformerExtractor,
    lm_from_policy,
    load_lm_into_policy,
)
from composition_gym.agents.ppo import bc_then_ppo, load_model, train_ppo
from composition_gym.agents.grpo import GRPOConfig, bc_then_grpo, train_grpo
from composition_gym.agents.pretrained import pretrained  # the function; shadows the subpackage's name
from composition_gym.agents.transformer import TransformerConfig, TransformerLM

__all__ = [
    "Agent",
    "CompositionEvalCallback",
    "EvalReport",
    "GRPOConfig",
    "LMAgent",
    "MaskableTransformerPolicy",
    "RandomAgent",
    "SB3Agent",
    "TextAgent",
    "TransformerActorCriticPolicy",
    "TransformerConfig",
    "TransformerExtractor",
    "TransformerLM",
    "bc_then_grpo",
    "bc_then_ppo",
    "behavior_cloning",
    "evaluate",
    "lm_from_policy",
    "load_lm_into_policy",
    "load_model",
    "pretrained",
    "trace_so_far",
    "train_grpo",
    "train_ppo",
]
