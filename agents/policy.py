"""The transformer as an SB3 policy: features extractor, PPO / MaskablePPO policy classes, weight copy.

The policy's action head is the LM's output layer: ``net_arch=dict(pi=[], vf=[64])`` makes SB3's
``action_net`` one ``Linear(d_model, V)`` on the features, and the features are the LM body's
hidden state at the last real token.  So after :func:`load_lm_into_policy` the policy's action
logits at each step *are* the LM's next-token logits at that position.

**Value net.**  The critic reads the same features (one transformer forward per batch, not two),
but through ``detach()``: value-loss gradients never reach the transformer.  When PPO starts from
behavior cloning the value head is untrained, and its large early gradients through a shared trunk
would overwrite what BC learned before the critic is any good; a second transformer for the critic
(``share_features_extractor=False``) avoids that too but doubles the cost of every forward and
backward.  Pass ``detach_critic=False`` in ``policy_kwargs`` for a fully shared trunk.

The policy classes live in this importable module, so ``PPO.load`` / ``MaskablePPO.load`` find
them after ``import composition_gym.agents`` without ``custom_objects``.  Models saved before the
agents were installed as ``composition_gym.agents`` name ``agents.policy``: :func:`~composition_gym.agents.ppo.load_model`
refuses them with a message saying how to load them.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from stable_baselines3.common.type_aliases import Schedule

from composition_gym.agents import prefix_sharing
from composition_gym.agents.transformer import TransformerBody, TransformerConfig, TransformerLM, load_state_checked

DEFAULT_VF_ARCH = (64,)


class TransformerExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: the transformer body's hidden state at the last real token.

    Observations are right-padded token ids (SB3 hands them over as floats); each batch is cut to
    its longest real prefix before attention, which causal attention makes exact.  In a PPO
    mini-batch most observations are prefixes of another one (earlier states of the same
    episode): those are read off the longer row's forward pass instead of being run again, with the
    same numbers and gradients up to float rounding (:func:`~composition_gym.agents.prefix_sharing.last_hidden`; the speed-up
    is measured in docs/performance.md).

    Args:
        observation_space: a ``Box`` of token ids.
        config: a :class:`TransformerConfig` or its dict form (a dict keeps saved models JSON-readable).
    """

    def __init__(self, observation_space: gym.spaces.Box, config: TransformerConfig | dict[str, Any] | None = None):
        cfg = TransformerConfig.from_dict(config) if config is not None else TransformerConfig()
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"TransformerExtractor needs a 1-D Box of token ids, got {observation_space}")
        if float(observation_space.high.max()) >= cfg.vocab_size:
            raise ValueError(f"observations reach token id {int(observation_space.high.max())}, "
                             f"beyond the model's vocab_size {cfg.vocab_size}")
        super().__init__(observation_space, features_dim=cfg.d_model)
        self.config = cfg
        self.body = TransformerBody(cfg)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return prefix_sharing.last_hidden(self.body, observations.long())


class DetachedCriticMlpExtractor(MlpExtractor):
    """SB3's ``MlpExtractor`` whose value branch reads the features through ``detach()``."""

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_net(features.detach())


class _TransformerPolicyMixin:
    """Defaults and the detached critic shared by the PPO and MaskablePPO policy classes."""

    def __init__(self, observation_space: gym.spaces.Space, action_space: gym.spaces.Space, lr_schedule: Schedule,
                 net_arch: list[int] | dict[str, list[int]] | None = None, *,
                 transformer: TransformerConfig | dict[str, Any] | None = None, detach_critic: bool = True,
                 ortho_init: bool = False, features_extractor_class: type[BaseFeaturesExtractor] = TransformerExtractor,
                 features_extractor_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        # Set before super().__init__, which builds the networks and calls _build_mlp_extractor.
        self.detach_critic = bool(detach_critic)
        features_extractor_kwargs = dict(features_extractor_kwargs or {})  # never mutate the caller's dict
        if transformer is not None:
            features_extractor_kwargs["config"] = TransformerConfig.from_dict(transformer).to_dict()
        features_extractor_kwargs.setdefault("config", TransformerConfig().to_dict())
        if net_arch is None:
            net_arch = dict(pi=[], vf=list(DEFAULT_VF_ARCH))
        # ortho_init off: SB3's orthogonal gains suit MLPs, not the transformer (or the LM head it receives).
        super().__init__(observation_space, action_space, lr_schedule, net_arch=net_arch,  # type: ignore[call-arg]
                         ortho_init=ortho_init, features_extractor_class=features_extractor_class,
                         features_extractor_kwargs=features_extractor_kwargs, **kwargs)

    def _build_mlp_extractor(self) -> None:
        cls = DetachedCriticMlpExtractor if self.detach_critic else MlpExtractor
        self.mlp_extractor = cls(self.features_dim, net_arch=self.net_arch, activation_fn=self.activation_fn,
                                 device=self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["detach_critic"] = self.detach_critic
        return data


class TransformerActorCriticPolicy(_TransformerPolicyMixin, ActorCriticPolicy):
    """``ActorCriticPolicy`` with the transformer extractor and a linear action head (for ``PPO``).

    Extra keyword arguments: ``transformer`` (a :class:`TransformerConfig` or dict) and
    ``detach_critic`` (default ``True``; see the module docstring).
    """


class MaskableTransformerPolicy(_TransformerPolicyMixin, MaskableActorCriticPolicy):
    """``MaskableActorCriticPolicy`` with the transformer extractor (for sb3-contrib's ``MaskablePPO``)."""


# ---------------------------------------------------------------------------- weight transfer
def _extractors(policy: ActorCriticPolicy) -> list[TransformerExtractor]:
    found = [policy.pi_features_extractor]
    if policy.vf_features_extractor is not policy.pi_features_extractor:
        found.append(policy.vf_features_extractor)
    for ext in found:
        if not isinstance(ext, TransformerExtractor):
            raise TypeError(f"the policy's features extractor is {type(ext).__name__}, not TransformerExtractor")
    return found


def _check_single_linear_head(policy: ActorCriticPolicy) -> None:
    if policy.mlp_extractor.latent_dim_pi != policy.features_dim or len(policy.mlp_extractor.policy_net) != 0:
        raise ValueError("the policy has hidden layers between features and action head (net_arch pi != []), "
                         "so its logits cannot equal the LM's")


def load_lm_into_policy(policy: ActorCriticPolicy, lm: TransformerLM) -> None:
    """Copy ``lm``'s body into the policy's extractor(s) and its head into ``action_net``.

    Afterwards the policy's action logits equal ``lm``'s logits at the last real token.

    Raises:
        ValueError: if the configs or head shapes differ (the message names both configs).
    """
    _check_single_linear_head(policy)
    for ext in _extractors(policy):
        if ext.config != lm.config:
            raise ValueError(f"LM config {lm.config} does not match the policy's transformer {ext.config}")
        load_state_checked(ext.body, lm.body.state_dict(), "the LM body")
    load_state_checked(policy.action_net, lm.head.state_dict(), "the LM head")
    # The optimizer's running moments belong to the old weights; they stay valid (same shapes).


def lm_from_policy(policy: ActorCriticPolicy) -> TransformerLM:
    """A :class:`TransformerLM` holding a copy of the policy's actor transformer and action head."""
    _check_single_linear_head(policy)
    ext = _extractors(policy)[0]
    lm = TransformerLM(ext.config).to(policy.device)
    lm.body.load_state_dict(ext.body.state_dict())
    lm.head.load_state_dict(policy.action_net.state_dict())
    lm.eval()
    return lm


def transformer_policy_kwargs(config: TransformerConfig | None = None, *, vf: tuple[int, ...] = DEFAULT_VF_ARCH,
                              detach_critic: bool = True) -> dict[str, Any]:
    """``policy_kwargs`` for our policy classes (or for the plain ``"MlpPolicy"`` string names)."""
    return dict(transformer=(config or TransformerConfig()).to_dict(), net_arch=dict(pi=[], vf=list(vf)),
                detach_critic=detach_critic)


__all__ = [
    "DetachedCriticMlpExtractor",
    "MaskableTransformerPolicy",
    "TransformerActorCriticPolicy",
    "TransformerConfig",
    "TransformerExtractor",
    "TransformerLM",
    "lm_from_policy",
    "load_lm_into_policy",
    "transformer_policy_kwargs",
]

