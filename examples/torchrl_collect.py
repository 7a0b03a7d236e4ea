"""TorchRL: vectorised collection on a composition-gym id with action masking.

    pip install "composition-gym[torchrl]"
    python examples/torchrl_collect.py --env-id Compose-L1to3-v1 --num-envs 8 --frames 4096

The native vector env (``gym.make_vec``) with ``info_mode="arrays"`` (fixed-shape infos, which
TorchRL turns into tensordict entries by itself) and ``autoreset_mode="SameStep"`` (what
``GymWrapper`` requires of a vector env) is wrapped by ``GymWrapper``; ``ActionMask`` reads
``action_mask`` so the actor's ``MaskedCategorical`` samples grammatical tokens only; a
``Collector`` gathers batches of frames.  The policy here is an untrained embedding-bag MLP:
plug in your own module, loss (``ClipPPOLoss``, ...) and optimiser to train.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import gymnasium as gym
import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import ActionMask, GymWrapper, TransformedEnv
from torchrl.modules import MaskedCategorical, ProbabilisticActor

import composition_gym
from composition_gym import tokens as T


@dataclass
class Args:
    env_id: str = "composition_gym/Compose-L1to3-v1"
    num_envs: int = 8
    frames: int = 2048
    """frames (env steps over all sub-environments) to collect"""
    frames_per_batch: int = 256
    seed: int = 0


def make_env(args: Args) -> TransformedEnv:
    venv = gym.make_vec(composition_gym.resolve_env_id(args.env_id), num_envs=args.num_envs,
                        autoreset_mode="SameStep", info_mode="arrays")
    env = GymWrapper(venv, categorical_action_encoding=True)  # a TransformedEnv already
    env.append_transform(ActionMask())
    env.set_seed(args.seed)
    return env


class TokenBag(nn.Module):
    """Logits over the vocabulary from the mean embedding of the observation's tokens."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.embed = nn.EmbeddingBag(T.VOCAB_SIZE, width, mode="mean", padding_idx=T.PAD_ID)
        self.head = nn.Sequential(nn.Tanh(), nn.Linear(width, T.VOCAB_SIZE))

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        flat = observation.reshape(-1, observation.shape[-1])
        return self.head(self.embed(flat)).reshape(*observation.shape[:-1], T.VOCAB_SIZE)


def make_actor(env: TransformedEnv) -> ProbabilisticActor:
    logits = TensorDictModule(TokenBag(), in_keys=["observation"], out_keys=["logits"])
    return ProbabilisticActor(logits, in_keys={"logits": "logits", "mask": "action_mask"}, out_keys=["action"],
                              spec=env.action_spec, distribution_class=MaskedCategorical, return_log_prob=True)


def collect(args: Args) -> dict:
    """Collect ``args.frames`` frames; returns what they hold (episodes, successes, malformed traces)."""
    torch.manual_seed(args.seed)
    env = make_env(args)
    actor = make_actor(env)
    collector = Collector(env, actor, frames_per_batch=args.frames_per_batch, total_frames=args.frames,
                          auto_register_policy_transforms=False)
    stats = {"frames": 0, "episodes": 0, "successes": 0, "malformed": 0, "ungrammatical_actions": 0}
    for batch in collector:
        done = batch["next", "done"].squeeze(-1)
        mask = batch["action_mask"]
        action = batch["action"]
        stats["frames"] += batch.numel()
        stats["episodes"] += int(done.sum())
        stats["successes"] += int(batch["next", "is_success"][done].sum())
        stats["malformed"] += int(batch["next", "malformed"][done].sum())
        stats["ungrammatical_actions"] += int((~mask.gather(-1, action.unsqueeze(-1))).sum())
    collector.shutdown()
    env.close()
    return {**asdict(args), **stats}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in asdict(Args()).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    stats = collect(Args(**vars(p.parse_args(argv))))
    print(" ".join(f"{k}={v}" for k, v in stats.items()))
    return stats


if __name__ == "__main__":
    main()
