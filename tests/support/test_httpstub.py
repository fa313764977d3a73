"""The HTTP stub the source tests run against (tests/support/httpstub.py): every method, the
request body recorded as sent, routes by path and by a query subset (the most specific wins,
the path alone as the fallback), answers made by a function of the request."""

from __future__ import annotations

import httpx

from support.httpstub import Canned, HttpStub, Recorded

INSTRUMENTS = "/api/v5/public/instruments"


def test_post_put_delete_are_served_and_their_bodies_recorded_exactly() -> None:
    body = "nonce=1&pair=XBT%2FUSD&note=" + "é" * 5000  # longer than one socket read
    with HttpStub() as stub, httpx.Client(base_url=stub.url) as client:
        stub.always("/0/private/BalanceEx", Canned(json={"error": []}))
        for method in ("POST", "PUT", "DELETE", "GET"):
            answer = client.request(method, "/0/private/BalanceEx", content=body if method != "GET" else None)
            assert answer.json() == {"error": []}, method
        assert [r.method for r in stub.to("/0/private/BalanceEx")] == ["POST", "PUT", "DELETE", "GET"]
        post, put, _delete, get = stub.requests
        assert post.body == body.encode() and put.text == body and get.body == b""
        assert post.form == {"nonce": ["1"], "pair": ["XBT/USD"], "note": ["é" * 5000]}
        client.post("/json", json={"instId": "BTC-USDT", "sz": "0.1"})
        assert stub.requests[-1].json() == {"instId": "BTC-USDT", "sz": "0.1"}
        assert client.post("/nothing?x=1").text == "httpstub: nothing queued for POST /nothing?x=1"


def test_a_query_route_answers_its_subset_and_the_path_alone_the_rest() -> None:
    with HttpStub() as stub, httpx.Client(base_url=stub.url) as client:
        stub.always(INSTRUMENTS, Canned(json="any"))
        stub.always(f"{INSTRUMENTS}?instType=SPOT", Canned(json="spot"))
        stub.always(f"{INSTRUMENTS}?instType=SWAP&instFamily=BTC-USD", Canned(json="btc swaps"))
        stub.always(f"{INSTRUMENTS}?instType=SWAP", Canned(json="swaps"))
        stub.add(f"{INSTRUMENTS}?instType=FUTURES", Canned(json="futures once"))

        def get(query: str) -> object:
            return client.get(INSTRUMENTS + query).json()

        assert get("?instType=SPOT") == "spot"
        assert get("?uly=x&instType=SPOT") == "spot"  # other parameters do not matter
        assert get("?instType=spot") == "any"  # values match exactly
        assert get("?instType=SWAP&instFamily=BTC-USD") == "btc swaps"  # the most specific, not the first
        assert get("?instFamily=BTC-USD&instType=SWAP") == "btc swaps"  # in any order
        assert get("?instType=SWAP&instFamily=ETH-USD") == "swaps"
        assert get("?instType=SPOT&instType=SWAP") == "any"  # a repeated parameter is not SPOT
        assert get("?instType=FUTURES") == "futures once"
        assert get("?instType=FUTURES") == "any"  # its queue is spent: the path alone answers
        assert get("") == "any"
        assert len(stub.to(f"{INSTRUMENTS}?instType=SPOT")) == 2 and len(stub.to(INSTRUMENTS)) == 10
        assert client.get(f"{INSTRUMENTS}/x?instType=SPOT").status_code == 404  # a query never widens the path


def test_a_query_route_without_a_path_route_is_a_404_for_other_queries() -> None:
    with HttpStub() as stub, httpx.Client(base_url=stub.url) as client:
        stub.always("/v5/market/tickers?category=spot&symbol=BTC%2FUSDT", Canned(json="btc"))
        stub.add("/v5/market/tickers?", Canned(json="empty query is the path"))
        assert client.get("/v5/market/tickers", params={"category": "spot", "symbol": "BTC/USDT"}).json() == "btc"
        assert client.get("/v5/market/tickers?category=linear").json() == "empty query is the path"
        assert client.get("/v5/market/tickers?category=linear").status_code == 404


def test_a_function_answers_from_the_request_and_its_failure_is_a_500() -> None:
    def page(request: Recorded) -> Canned:
        cursor = request.query.get("cursor", [""])[0]
        return Canned(json={"cursor": str(int(cursor or 0) + 1) if cursor != "2" else "", "form": request.form})

    def broken(request: Recorded) -> Canned:
        raise KeyError(request.path)

    with HttpStub() as stub, httpx.Client(base_url=stub.url) as client:
        stub.always("/v5/market/instruments-info", page)
        stub.add("/broken", broken)
        seen, cursor = [], "0"
        while cursor:
            answer = client.post("/v5/market/instruments-info", params={"cursor": cursor}, content=f"n={cursor}").json()
            assert answer["form"] == {"n": [cursor]}
            seen.append(cursor := answer["cursor"])
        assert seen == ["1", "2", ""]
        failed = client.get("/broken")
        assert failed.status_code == 500 and "KeyError: '/broken'" in failed.text
        assert [type(e) for e in stub.errors] == [KeyError]
        assert client.get("/broken").status_code == 404  # a queued function is served once too
