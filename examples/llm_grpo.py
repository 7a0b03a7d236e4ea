"""Fine-tune a Hugging Face causal LM on a composition-gym id: SFT (TRL SFTTrainer), then GRPO
(TRL GRPOTrainer) with the environment's own reward, then evaluate it with composition-gym's
``evaluate`` through ``TextAgent``.

    pip install "composition-gym[llm]"
    python examples/llm_grpo.py                                  # a tiny random model, CPU, ~1 min
    python examples/llm_grpo.py --model Qwen/Qwen2.5-0.5B --sft-steps 2000 --grpo-steps 500 \\
        --problems 20000 --eval-episodes 500                     # a real model: needs a GPU

The default ``--model tiny`` builds a randomly initialised 2-layer Llama and a character-level
tokenizer locally (nothing is downloaded), so the script runs offline and in the test suite;
it learns little in a few steps.  A named model is loaded with ``from_pretrained`` (downloaded
from the Hub, or a local path) and wants a GPU.

Steps, top to bottom: the datasets (``composition_gym.llm.to_dataset``: prompt, reference
completion, hidden cascade, ...), SFT on the reference completions, GRPO with
``CompositionReward`` (the env's scorer: outcome + process reward), then greedy completions of
the evaluation problems played by ``TextAgent`` in ``evaluate`` (success by id, depth, module).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from composition_gym import llm
from composition_gym import tokens as T


@dataclass
class Args:
    env_id: str = "composition_gym/Compose-L1to3-v1"
    """the id whose problems train the model (SFT and GRPO)"""
    eval_ids: tuple[str, ...] = ("composition_gym/Compose-L3-v1", "composition_gym/OOD-Unseen-L3-v1")
    """ids evaluated after training (ID and OOD)"""
    model: str = "tiny"
    """'tiny' (random, built locally) or a Hugging Face model name/path (a GPU is advised)"""
    problems: int = 256
    """training problems (rows of the dataset)"""
    sft_steps: int = 20
    grpo_steps: int = 4
    batch_size: int = 8
    num_generations: int = 4
    """GRPO group size: completions sampled per prompt"""
    max_completion_length: int = 48
    learning_rate: float = 1e-3
    process_reward: float = 0.25
    """reward per right intermediate, on top of the outcome reward 1"""
    eval_episodes: int = 20
    seed: int = 0
    output_dir: str = "runs/llm_grpo"
    use_cpu: bool = True


def parse_args(argv=None) -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif f.name == "eval_ids":
            p.add_argument(flag, nargs="+", default=list(f.default))
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(f.type, str), default=f.default)
    return Args(**vars(p.parse_args(argv)))


def tiny_model_and_tokenizer(seed: int):
    """A random 2-layer Llama and a character-level tokenizer over the env's text (built offline)."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = sorted(set("".join(T.TOKENS)) | {" "})
    vocab = {t: i for i, t in enumerate(specials + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    core.decoder = decoders.Fuse()  # and back without spaces between them
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config), tokenizer


def load_model_and_tokenizer(args: Args):
    if args.model == "tiny":
        return tiny_model_and_tokenizer(args.seed)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(args.model), tokenizer


def common(args: Args, stage: str) -> dict:
    """TrainingArguments shared by both trainers."""
    return dict(output_dir=str(Path(args.output_dir) / stage), per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate, logging_steps=1, save_strategy="no", report_to="none",
                seed=args.seed, use_cpu=args.use_cpu, bf16=not args.use_cpu, disable_tqdm=True)


def sft(model, tokenizer, dataset, args: Args):
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(max_steps=args.sft_steps, max_length=256, **common(args, "sft"))
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset.select_columns(["prompt", "completion"]),
                         processing_class=tokenizer)
    trainer.train()
    return trainer.model, trainer.state.log_history


def grpo(model, tokenizer, dataset, args: Args):
    from trl import GRPOConfig, GRPOTrainer

    config = GRPOConfig(max_steps=args.grpo_steps, num_generations=args.num_generations,
                        max_completion_length=args.max_completion_length, **common(args, "grpo"))
    # Every column but "prompt" and "completion" reaches the reward function as a keyword argument.
    trainer = GRPOTrainer(model=model, reward_funcs=llm.CompositionReward(process_reward=args.process_reward),
                          args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return trainer.model, trainer.state.log_history


def complete(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 32) -> dict[str, str]:
    """Greedy completions of ``prompts``, batched (left padding)."""
    import torch

    tokenizer.padding_side = "left"
    model.eval()
    out = {}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out.update(zip(chunk, texts))
    return out


def evaluate_lm(model, tokenizer, args: Args):
    """Greedy completions played by TextAgent through composition-gym's evaluate."""
    from composition_gym.agents.agent import TextAgent
    from composition_gym.agents.evaluation import evaluate

    # evaluate's episode i of an id is problem i of llm.problems(id, n, seed): complete them in batches.
    prompts = [r["prompt"] for r in llm.problems(list(args.eval_ids), args.eval_episodes, seed=args.seed + 10_000)]
    completions = complete(model, tokenizer, prompts, args.max_completion_length)

    def fn(prompt: str) -> str:
        return completions.get(prompt) or complete(model, tokenizer, [prompt], args.max_completion_length)[prompt]

    return evaluate(TextAgent(fn), list(args.eval_ids), episodes=args.eval_episodes, seed=args.seed + 10_000)


def main(argv=None) -> dict:
    args = parse_args(argv)
    train = llm.to_dataset(args.env_id, args.problems, seed=args.seed)
    model, tokenizer = load_model_and_tokenizer(args)
    model, sft_log = sft(model, tokenizer, train, args)
    model, grpo_log = grpo(model, tokenizer, train, args)
    report = evaluate_lm(model, tokenizer, args)
    print(report.table())
    summary = {"args": asdict(args), "sft_loss": [h["loss"] for h in sft_log if "loss" in h],
               "grpo_reward": [h["reward"] for h in grpo_log if "reward" in h],
               "eval": report.success_by_env, "eval_episodes": len(report.episodes),
               "eval_malformed": sum(e.malformed for e in report.episodes) / len(report.episodes)}
    path = Path(args.output_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    print(f"summary: {path}")
    return summary


if __name__ == "__main__":
    main()
