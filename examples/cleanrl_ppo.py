"""PPO in one file, CleanRL style, on a composition-gym id through ``gym.make_vec`` with action masking.

    python examples/cleanrl_ppo.py --env-id Atomic-L1-v1 --total-timesteps 200000

Reads top to bottom like CleanRL's ``ppo.py``: the arguments in one dataclass, the vector env,
the agent, then the loop (rollout, GAE, clipped policy/value updates) with every logged number
named.  Differences from CleanRL: the env is composition-gym's native vector env with
``autoreset_mode="SameStep"`` (the old-gym autoreset CleanRL's loop assumes) and
``info_mode="arrays"``; logits are masked with ``info["action_mask"]`` (invalid tokens get
-inf), so every sampled token is grammatical; the observation is token ids, embedded per
position.  Needs only the core install (torch is a core dependency).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

import composition_gym
from composition_gym import tokens as T


@dataclass
class Args:
    env_id: str = "composition_gym/Atomic-L1-v1"
    seed: int = 0
    total_timesteps: int = 50_000
    num_envs: int = 8
    num_steps: int = 64
    """steps per env per rollout"""
    learning_rate: float = 2.5e-4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    process_reward: float = 0.25
    """the env's reward per right intermediate (dense signal)"""
    json_out: str = ""
    """write the per-iteration log here (JSON lines)"""


class Agent(nn.Module):
    """Token and position embeddings, an MLP, a masked policy head and a value head."""

    def __init__(self, max_len: int, width: int = 16, hidden: int = 128):
        super().__init__()
        self.tok = nn.Embedding(T.VOCAB_SIZE, width)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(max_len * width, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                  nn.Tanh())
        self.actor = nn.Linear(hidden, T.VOCAB_SIZE)
        self.critic = nn.Linear(hidden, 1)

    def get_value(self, obs):
        return self.critic(self.body(self.tok(obs) + self.pos)).squeeze(-1)

    def get_action_and_value(self, obs, mask, action=None):
        h = self.body(self.tok(obs) + self.pos)
        logits = self.actor(h).masked_fill(~mask, float("-inf"))
        dist = Categorical(logits=logits)
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(h).squeeze(-1)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in asdict(Args()).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    args = Args(**vars(p.parse_args(argv)))
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    iterations = args.total_timesteps // batch_size
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    envs = gym.make_vec(composition_gym.resolve_env_id(args.env_id), num_envs=args.num_envs,
                        autoreset_mode="SameStep", info_mode="arrays", process_reward=args.process_reward)
    max_len = envs.single_observation_space.shape[0]
    agent = Agent(max_len)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    obs = torch.zeros((args.num_steps, args.num_envs, max_len), dtype=torch.long)
    masks = torch.zeros((args.num_steps, args.num_envs, T.VOCAB_SIZE), dtype=torch.bool)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long)
    logprobs, rewards, dones, values = (torch.zeros((args.num_steps, args.num_envs)) for _ in range(4))

    next_obs, info = envs.reset(seed=args.seed)
    next_obs, next_mask = torch.as_tensor(next_obs), torch.as_tensor(info["action_mask"])
    next_done = torch.zeros(args.num_envs)
    log, start = [], time.time()
    for iteration in range(1, iterations + 1):
        frac = 1.0 - (iteration - 1.0) / iterations
        optimizer.param_groups[0]["lr"] = frac * args.learning_rate
        episodes = {"return": [], "success": [], "all_steps_correct": [], "malformed": []}

        for step in range(args.num_steps):
            obs[step], masks[step], dones[step] = next_obs, next_mask, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs, next_mask)
            actions[step], logprobs[step], values[step] = action, logprob, value
            o, reward, terminated, truncated, info = envs.step(action.numpy())
            done = terminated | truncated
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
            next_obs, next_mask = torch.as_tensor(o), torch.as_tensor(info["action_mask"])
            next_done = torch.as_tensor(done, dtype=torch.float32)
            if done.any():  # SameStep: the ended episodes' final infos
                final = info["final_info"]
                episodes["success"] += final["is_success"][done].tolist()
                episodes["all_steps_correct"] += final["all_steps_correct"][done].tolist()
                episodes["malformed"] += final["malformed"][done].tolist()

        with torch.no_grad():  # generalised advantage estimation
            next_value = agent.get_value(next_obs)
            advantages = torch.zeros_like(rewards)
            lastgaelam = 0
            for t in reversed(range(args.num_steps)):
                nextnonterminal = 1.0 - (next_done if t == args.num_steps - 1 else dones[t + 1])
                nextvalues = next_value if t == args.num_steps - 1 else values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values

        b_obs, b_masks, b_actions = obs.reshape(batch_size, max_len), masks.reshape(batch_size, -1), actions.reshape(-1)
        b_logprobs, b_advantages, b_returns = logprobs.reshape(-1), advantages.reshape(-1), returns.reshape(-1)
        b_values = values.reshape(-1)
        clipfracs = []
        for _ in range(args.update_epochs):
            for idx in torch.randperm(batch_size).split(minibatch_size):
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[idx], b_masks[idx], b_actions[idx])
                logratio = newlogprob - b_logprobs[idx]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())
                mb_adv = b_advantages[idx]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
                v_loss = 0.5 * ((newvalue - b_returns[idx]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

        row = {"iteration": iteration, "global_step": iteration * batch_size, "episodes": len(episodes["success"]),
               "success_rate": float(np.mean(episodes["success"])) if episodes["success"] else 0.0,
               "all_steps_correct": float(np.mean(episodes["all_steps_correct"])) if episodes["success"] else 0.0,
               "malformed_rate": float(np.mean(episodes["malformed"])) if episodes["success"] else 0.0,
               "reward_per_step": float(rewards.mean()), "policy_loss": pg_loss.item(), "value_loss": v_loss.item(),
               "entropy": entropy_loss.item(), "approx_kl": approx_kl.item(), "clipfrac": float(np.mean(clipfracs)),
               "SPS": int(iteration * batch_size / (time.time() - start))}
        log.append(row)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    envs.close()
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in log)
    return log


if __name__ == "__main__":
    main()
