"""The master key file is opened once (O_NOFOLLOW), checked through that descriptor, read from it.

A symbolic link, a second hard link, a file readable beyond its owner and a
FIFO under the key's name are each refused with a sentence naming the file
and what is wrong; the good file loads.
"""

import os
import sys

import pytest

from keys import KeysError
from keys.audit import AccessLog
from keys.master import KeyFileMaster, read_private_file
from tests.keys_support import make_key_file


@pytest.fixture
def key_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    secrets_dir = tmp_path / "etc"
    secrets_dir.mkdir()
    master = make_key_file(secrets_dir, data)
    master.close()
    return secrets_dir / "master.key", data


def load(path, data):
    return KeyFileMaster(path, AccessLog(data), data)


def test_the_owner_only_key_file_loads(key_file):
    path, data = key_file
    master = load(path, data)
    assert master.key_id.startswith("keyfile-")
    assert master.versions() == [1]


def test_a_symbolic_link_to_the_key_file_is_refused(key_file, tmp_path):
    path, data = key_file
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(KeysError, match=r"link\.key is a symbolic link; name the regular file"):
        load(link, data)


def test_a_second_hard_link_is_refused(key_file, tmp_path):
    path, data = key_file
    os.link(path, tmp_path / "copy.key")
    with pytest.raises(KeysError, match="has 2 hard links; a secret file must have one name"):
        load(path, data)


@pytest.mark.parametrize("mode", [0o644, 0o440, 0o604])
def test_a_key_file_readable_beyond_its_owner_is_refused(key_file, mode):
    path, data = key_file
    os.chmod(path, mode)
    with pytest.raises(KeysError, match=f"has mode {mode:04o}, readable beyond its owner"):
        load(path, data)


def test_a_fifo_under_the_key_name_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "master.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeysError, match="is not a regular file"):
        read_private_file(fifo, "master key file")


def test_a_missing_key_file_is_named(tmp_path):
    with pytest.raises(KeysError, match="master key file not found at"):
        read_private_file(tmp_path / "absent.key", "master key file")


def test_a_file_swapped_in_after_the_check_is_not_what_is_read(key_file, tmp_path, monkeypatch):
    # The attacker's moment: right after the permission check, another file
    # (world-readable, their content) takes the key's name. What is read must
    # be the file that was checked, so the loaded key is still the real one.
    path, data = key_file
    real = load(path, data).key_id
    planted = tmp_path / "planted.key"
    planted.write_text(path.read_text().replace(real, "keyfile-attacker"))
    os.chmod(planted, 0o644)
    swapped = []

    def swap_after(check):
        def checked(target, *args, **kwargs):
            result = check(target, *args, **kwargs)
            # Only the check keys/master.py makes, not a stat inside Path.resolve().
            caller = sys._getframe(1).f_code.co_filename
            if not swapped and caller.endswith(os.path.join("keys", "master.py")):
                swapped.append(True)
                os.rename(path, tmp_path / "etc" / "moved.key")
                os.rename(planted, path)
            return result

        return checked

    # Whichever the code checks with, stat by name or fstat of an open file.
    monkeypatch.setattr(os, "stat", swap_after(os.stat))
    monkeypatch.setattr(os, "fstat", swap_after(os.fstat))
    assert load(path, data).key_id == real
    assert swapped
