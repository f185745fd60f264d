"""The CLIs' shared set-up: where JAX's persistent compilation cache goes."""

import jax
import pytest

from cooptim.cli.errors import use_compilation_cache


@pytest.fixture
def restore_cache_config():
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs,
              jax.config.jax_persistent_cache_min_entry_size_bytes)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", before[2])


def test_the_cache_goes_where_the_user_says_and_jax_own_setting_wins(monkeypatch, tmp_path, restore_cache_config):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("COOPTIM_JAX_CACHE", str(tmp_path / "mine"))
    use_compilation_cache()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")

    monkeypatch.delenv("COOPTIM_JAX_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    use_compilation_cache()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xdg" / "cooptim" / "jax")

    jax.config.update("jax_compilation_cache_dir", "untouched")
    monkeypatch.setenv("COOPTIM_JAX_CACHE", "off")
    use_compilation_cache()
    monkeypatch.setenv("COOPTIM_JAX_CACHE", str(tmp_path / "ignored"))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))  # JAX reads it itself
    use_compilation_cache()
    assert jax.config.jax_compilation_cache_dir == "untouched"
