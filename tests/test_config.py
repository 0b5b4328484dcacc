"""The configuration file: defaults, errors, and the documentation staying true."""

import pytest

from appliance import config
from tests.conftest import REPO


def test_every_setting_has_a_line_in_the_docs():
    doc = (REPO / "docs" / "configuration.md").read_text()
    missing = [name for name in config.all_setting_names() if f"`{name}`" not in doc]
    assert missing == []


def test_defaults_need_no_file():
    settings = config.load()
    assert settings.tftp.max_transfers >= 1000
    assert settings.server.http_port == 80
    assert settings.server.https_port == 443


def test_file_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[server]\ninterface = "eno1"\nhttp_port = 8080\n[tftp]\ntimeout_seconds = 2\n'
    )
    settings = config.load(path, {"server.http_port": 8081, "server.data_dir": None})
    assert settings.server.interface == "eno1"
    assert settings.server.http_port == 8081
    assert settings.tftp.timeout_seconds == 2.0
    assert settings.server.data_dir == "/var/lib/cloudboot"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nintreface = 'x'\n", "unknown setting server.intreface"),
        ("[sever]\ninterface = 'x'\n", "unknown section [sever]"),
        ("[server]\nhttp_port = '80'\n", "server.http_port must be a whole number"),
        ("[dhcp]\nenabled = 1\n", "dhcp.enabled must be true or false"),
        ("server = 3\n", "[server] must be a table"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_with_the_name(tmp_path, text, expected):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        config.load(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read configuration file"):
        config.load(tmp_path / "absent.toml")
