"""The Hydra overrides of a run small enough for a test (a few seconds once the base model is
cached), shared by the tests that run the CLI or compose a launcher."""

TINY = [
    "agent.episodes=32",
    "agent.batch_episodes=16",
    "agent.updates_per_chunk=2",
    "base.epochs=1",
    "finetune.epochs=0",
    "logger=none",
    "data.max_examples=600",
    "env.distill.steps=0",
    "env.distill.examples=64",
]
