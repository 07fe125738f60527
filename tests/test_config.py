"""Config: defaults, TOML, MEMOSD_* overrides, refusals, and that every setting is documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from memosd import config
from memosd.errors import InvalidArgumentError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    c = config.load(env={})
    assert c.listen == "127.0.0.1:50051"
    assert c.data_dir == tmp_path / "memosd"
    assert c.limits.max_batch_size > 0


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = tmp_path / "memosd.toml"
    path.write_text('listen = "0.0.0.0:1"\n[limits]\nmax_batch_size = 7\nmax_top_k = 9\n')
    c = config.load(
        path,
        env={"MEMOSD_LIMITS_MAX_TOP_K": "11", "MEMOSD_EMBEDDER_PRELOAD": "false"},
        overrides={"listen": "127.0.0.1:2", "data_dir": None},
    )
    assert (c.listen, c.limits.max_batch_size, c.limits.max_top_k) == ("127.0.0.1:2", 7, 11)
    assert c.embedder.preload is False


@pytest.mark.parametrize(
    ("text", "env", "field"),
    [
        ("[limits]\nmax_batch_sizes = 1\n", {}, "limits.max_batch_sizes"),
        ("[nope]\nx = 1\n", {}, "nope"),
        ("[limits]\nmax_batch_size = 'many'\n", {}, "limits.max_batch_size"),
        ("", {"MEMOSD_LIMITS_MAX_TOP_K": "-1"}, "MEMOSD_LIMITS_MAX_TOP_K"),
        ("", {"MEMOSD_LOG_LEVEL": "LOUD"}, "log_level"),
        ("listen = 'nowhere'\n", {}, "listen"),
        ("not toml [", {}, "config"),
    ],
)
def test_bad_settings_name_the_setting(
    tmp_path: Path, text: str, env: dict[str, str], field: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgumentError) as info:
        config.load(path, env=env)
    assert info.value.field == field


def test_every_setting_is_documented() -> None:
    docs = DOCS.read_text()
    for name in config.settings():
        env_name = config.ENV_PREFIX + name.replace(".", "_").upper()
        assert f"`{name}`" in docs, name
        assert f"`{env_name}`" in docs, env_name
