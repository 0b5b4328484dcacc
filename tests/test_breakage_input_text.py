"""Adversarial text in operator input: labels and user names.

Before the fixes a label value could hold NUL, newlines or U+202E (which
turns "evil" into a reversed look-alike on screen and in exports), and an
over-long user name came back whole, 10,000 characters of it, in the error
message.
"""

import pytest

from appliance.core import auth
from tests.api_support import start_api
from tests.jobs_support import add_machine


@pytest.fixture
async def api(nursery, tmp_path):
    client = await start_api(nursery, tmp_path)
    yield client
    await client.store.close()


@pytest.mark.parametrize("value", ["\u202eevil", "a\x00b", "line\nbreak"])
async def test_labels_with_control_or_format_characters_are_refused(api, value):
    machine = await add_machine(api.store)
    path = f"/api/v1/machines/{machine}/labels"

    status, _, body = await api.call("PUT", path, {"owner": value}, role="operator")
    _, _, after = await api.call("GET", f"/api/v1/machines/{machine}", role="viewer")

    assert status == 400, body
    assert body["error"]["code"] == "invalid_labels"
    assert after["labels"] == {}


async def test_printable_unicode_labels_still_work(api):
    machine = await add_machine(api.store)
    path = f"/api/v1/machines/{machine}/labels"

    status, _, body = await api.call("PUT", path, {"owner": "Zürich Ω"}, role="operator")

    assert status == 200, body
    assert body["labels"] == {"owner": "Zürich Ω"}


def test_an_over_long_user_name_is_not_echoed_whole():
    with pytest.raises(auth.AuthError) as refused:
        auth.check_user_name("a" * 10_000)
    assert len(refused.value.message) < 200
