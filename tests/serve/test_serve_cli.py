"""orpo-serve's config layering and its CLI's handling of bad input (no server is started)."""

from __future__ import annotations

import pytest

from orpo_deploy.serve.cli import main, parse_config
from orpo_deploy.serve.config import ConfigError, ServeConfig, check_servable_model_dir
from orpo_deploy.serve.engine import apply_cpu_env_defaults

A, B, C = ("a" * 32, "b" * 32, "c" * 32)


def test_defaults_then_env_then_flags(monkeypatch):
    monkeypatch.setenv("ORPO_SERVE_PORT", "9001")
    monkeypatch.setenv("ORPO_SERVE_MAX_QUEUE", "7")
    monkeypatch.setenv("ORPO_SERVE_API_KEYS", f"{A}, {B}")
    monkeypatch.setenv("ORPO_SERVE_METRICS_AUTH", "true")
    config = parse_config(["--port", "9002", "--api-key", C])
    assert config.port == 9002  # flag beats env
    assert config.max_queue == 7  # env beats default
    assert config.api_keys == (C,)
    assert config.metrics_auth is True
    assert config.host == "127.0.0.1" and config.max_concurrency == 64 and config.trust_remote_code is False
    assert ServeConfig.from_env({"ORPO_SERVE_API_KEYS": f"{A}, {B}"}).api_keys == (A, B)


def test_keys_from_a_file_and_the_rules_for_keys(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# clients\n{A}\n\n{B}\n")
    assert parse_config(["--api-key-file", str(path)]).api_keys == (A, B)
    with pytest.raises(ConfigError, match="at least 32"):
        ServeConfig(api_keys=("short",))
    with pytest.raises(ConfigError, match="placeholder"):
        ServeConfig(api_keys=("replace-me-client-key-0000000000000000",))
    with pytest.raises(ConfigError, match="without an API key"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", allow_unauthenticated=True).api_keys == ()
    assert ServeConfig(host="0.0.0.0", api_keys=(A,)).host == "0.0.0.0"
    with pytest.raises(ConfigError, match="holds no key"):
        (tmp_path / "empty").write_text("# none\n")
        ServeConfig(api_key_file=str(tmp_path / "empty"))


def test_model_name_defaults():
    assert ServeConfig().model_name == "smollm2-135m-instruct"
    assert ServeConfig(model="tiny-smollm2").model_name == "tiny-smollm2"
    assert ServeConfig(model="/models/run-7/").model_name == "run-7"
    assert ServeConfig(model="/models/x", served_model_name="prod").model_name == "prod"


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--port", "eighty"], {}, "invalid int value"),
        (["--port", "70000"], {}, "port must be in"),
        (["--max-concurrency", "0"], {}, "max_concurrency must be >= 1"),
        (["--no-such-flag"], {}, "unrecognized arguments"),
        ([], {"ORPO_SERVE_MAX_QUEUE": "many"}, "ORPO_SERVE_MAX_QUEUE"),
        (["--api-key", "has space"], {}, "no whitespace"),
        (["--model", "/does/not/exist"], {"HF_HUB_OFFLINE": "1"}, "no such folder"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, env, fragment, capsys, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("orpo-serve: error:") and fragment in err
    assert "Traceback" not in err


def test_pickle_only_model_folder_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(ConfigError, match="safetensors"):
        check_servable_model_dir(tmp_path)
    assert main(["--model", str(tmp_path)]) == 2
    assert "safetensors" in capsys.readouterr().err


def test_unreadable_model_gives_one_line(monkeypatch, capsys):
    # root ignores file modes, so the unreadable folder is simulated where the CLI first reads it
    def unreadable(spec):
        raise PermissionError(13, "Permission denied", spec)

    monkeypatch.setattr("orpo_deploy.serve.cli.resolve_model", unreadable)
    assert main(["--model", "/models/locked"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err and "Traceback" not in err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "--grace-seconds" in capsys.readouterr().out


def test_cpu_env_defaults_do_not_override_the_operator():
    env = {"VLLM_CPU_KVCACHE_SPACE": "3"}
    apply_cpu_env_defaults(ServeConfig(kv_cache_gib=2), env)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "auto" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    import torch

    assert env.get("VLLM_TARGET_DEVICE") == (None if torch.cuda.is_available() else "cpu")


@pytest.mark.slow  # importing vllm: ~40 s on a loaded 2-core machine, free when another test imported it already
def test_parallel_sizes_reach_the_vllm_engine_args(monkeypatch, tmp_path):
    """Tensor/data parallelism (flags or ORPO_SERVE_* env, as the Kubernetes manifests set them) go to vLLM as is."""
    from vllm.v1.engine.async_llm import AsyncLLM

    from orpo_deploy.serve.engine import EngineStats, _build_async_llm

    monkeypatch.setenv("ORPO_SERVE_DATA_PARALLEL_SIZE", "3")
    config = parse_config(["--tensor-parallel-size", "2"])
    seen = {}
    monkeypatch.setattr(AsyncLLM, "from_engine_args", classmethod(lambda cls, args, **kw: seen.setdefault("a", args)))
    args = _build_async_llm(config, tmp_path, EngineStats())
    assert (args.tensor_parallel_size, args.data_parallel_size) == (2, 3)
