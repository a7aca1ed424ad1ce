"""``python -m orpo_deploy.serve``: the engine spawns a child process, so the entry point must sit behind this guard."""

from orpo_deploy.serve.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
