"""Router: static and parameter routes, catch-all, 404/405, HEAD for GET."""

import pytest

from appliance.http import HttpError, RouteError, Router


async def a(request):
    return "a"


async def b(request):
    return "b"


def test_static_and_parameter_routes():
    router = Router()
    router.add("GET", "/api/v1/machines", a)
    router.add("GET", "/api/v1/machines/{machine_id}", b)
    router.add("POST", "/api/v1/machines/{machine_id}/jobs", a)

    assert router.resolve("GET", "/api/v1/machines") == (a, {})
    assert router.resolve("GET", "/api/v1/machines/m-1") == (b, {"machine_id": "m-1"})
    assert router.resolve("POST", "/api/v1/machines/m-1/jobs") == (a, {"machine_id": "m-1"})


def test_parameter_does_not_cross_slashes_or_match_empty():
    router = Router()
    router.add("GET", "/m/{id}", a)
    for path in ("/m/", "/m/x/y"):
        with pytest.raises(HttpError) as caught:
            router.resolve("GET", path)
        assert caught.value.status == 404


def test_literal_suffix_and_catch_all():
    router = Router()
    router.add("GET", "/ipxe/{mac}.ipxe", a)
    router.add("GET", "/boot/{path:*}", b)

    assert router.resolve("GET", "/ipxe/52-54-00-12-34-56.ipxe") == (
        a,
        {"mac": "52-54-00-12-34-56"},
    )
    assert router.resolve("GET", "/boot/bootos/x/initrd.img") == (
        b,
        {"path": "bootos/x/initrd.img"},
    )
    with pytest.raises(HttpError):
        router.resolve("GET", "/ipxe/52-54-00-12-34-56.txt")


def test_405_lists_allowed_methods_and_head_follows_get():
    router = Router()
    router.add("GET", "/r", a)
    router.add("PUT", "/r", b)

    assert router.resolve("HEAD", "/r") == (a, {})
    with pytest.raises(HttpError) as caught:
        router.resolve("DELETE", "/r")
    assert caught.value.status == 405
    assert ("allow", "GET, HEAD, PUT") in caught.value.headers


def test_malformed_and_duplicate_patterns_are_refused():
    router = Router()
    router.add("GET", "/x/{id}", a)
    for method, pattern in [
        ("GET", "/x/{id}"),
        ("GET", "no-slash"),
        ("GET", "/{rest:*}/tail"),
        ("GET", "/x/{bad"),
    ]:
        with pytest.raises(RouteError):
            router.add(method, pattern, b)


def test_many_patterns_keep_their_order_and_their_own_parameters():
    router = Router()
    handlers = {}
    for index in range(40):

        async def handler(request, index=index):
            return index

        handlers[index] = handler
        router.add("GET", f"/api/v1/kind{index}/{{item_id}}/sub/{{sub_id}}", handler)
    router.add("GET", "/api/v1/{anything:*}", a)

    assert router.resolve("GET", "/api/v1/kind37/x/sub/y") == (
        handlers[37],
        {"item_id": "x", "sub_id": "y"},
    )
    assert router.resolve("GET", "/api/v1/kind37/x/other") == (a, {"anything": "kind37/x/other"})
