from __future__ import annotations

import json
import stat

from dc_client.config import config_path, resolve, write_config

from localserver import Reply


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_login_writes_the_key_to_an_owner_only_file_under_xdg_config_home(dc, tmp_path):
    ran = dc("login", "--api-key", "dck_secret", "--api-url", "http://example.test", "--no-verify")
    assert ran.code == 0, ran.err
    path = tmp_path / "config" / "dc" / "config.json"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert json.loads(path.read_text()) == {
        "api_url": "http://example.test",
        "api_key": "dck_secret",
    }


def test_login_checks_the_key_with_the_api_before_keeping_it(dc, server, tmp_path):
    server.on(
        "GET",
        "/me",
        Reply(401, {"code": 401, "status": "Unauthorized", "message": "invalid API key"}),
    )
    ran = dc("login", "--api-key", "dck_wrong", "--api-url", server.url)
    assert ran.code == 1
    assert "invalid API key" in ran.err
    assert not (tmp_path / "config" / "dc" / "config.json").exists()

    server.on("GET", "/me", Reply(200, {"id": "u1", "email": "alice@example.com"}))
    ran = dc("login", "--api-key", "dck_right", "--api-url", server.url)
    assert ran.code == 0, ran.err
    assert "alice@example.com" in ran.out
    assert server.requests_to("GET", "/me")[-1].headers["authorization"] == "Bearer dck_right"


def test_a_config_file_that_was_readable_by_others_is_narrowed_when_rewritten(tmp_path):
    path = tmp_path / "dc" / "config.json"
    path.parent.mkdir()
    path.write_text("{}")
    path.chmod(0o644)
    write_config(path, {"api_key": "dck_x"})
    assert mode(path) == 0o600


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path):
    path = tmp_path / "config.json"
    write_config(path, {"api_url": "http://file", "api_key": "dck_file"})
    env = {"DC_CONFIG": str(path)}
    assert resolve(flag_url=None, flag_key=None, env=env).api_key == "dck_file"
    env |= {"DC_API_URL": "http://env", "DC_API_KEY": "dck_env"}
    from_env = resolve(flag_url=None, flag_key=None, env=env)
    assert (from_env.api_url, from_env.api_key, from_env.source) == ("http://env", "dck_env", "env")
    flagged = resolve(flag_url="http://flag/", flag_key="dck_flag", env=env)
    assert (flagged.api_url, flagged.api_key) == ("http://flag", "dck_flag")


def test_the_default_path_follows_xdg_config_home():
    assert str(config_path({"XDG_CONFIG_HOME": "/x"})) == "/x/dc/config.json"
    assert str(config_path({"DC_CONFIG": "/y/c.json", "XDG_CONFIG_HOME": "/x"})) == "/y/c.json"


def test_dc_uses_the_key_from_the_config_file_when_no_flag_or_environment_gives_one(dc, server):
    server.on("GET", "/billing/balance", Reply(200, {"balance": "3.5000"}))
    assert dc("login", "--api-key", "dck_kept", "--api-url", server.url, "--no-verify").code == 0
    ran = dc("balance", "--json")
    assert ran.code == 0, ran.err
    assert ran.json() == {"balance": "3.5000"}
    assert server.seen[-1].headers["authorization"] == "Bearer dck_kept"
    ran = dc("balance", env={"DC_API_KEY": "dck_env"})
    assert "$3.5000" in ran.out
    assert server.seen[-1].headers["authorization"] == "Bearer dck_env"
