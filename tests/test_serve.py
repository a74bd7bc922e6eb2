"""`fpdm serve` without a browser: the JSON endpoints, bad input, a queue of concurrent jobs."""

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

import fpdm.sampling.loop
from fpdm.serve.server import make_server


@pytest.fixture(scope="module")
def url():
    server = make_server(port=0)  # the built-in digits FPDM and DiT
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def _get(base, path):
    try:
        with urllib.request.urlopen(base + path, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(base, path, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_page_and_models(url):
    base, _ = url
    status, page = _get(base, "/")
    assert status == 200 and b"<script>" in page and b"http" not in page.split(b"<script>")[1]  # no CDN
    status, body = _get(base, "/api/models")
    names = {m["name"]: m for m in json.loads(body)["models"]}
    assert names["digits-fpdm"]["arch"] == "fpdm" and names["digits-dit"]["arch"] == "dit"
    assert json.loads(body)["samplers"] == list(fpdm.sampling.loop.SAMPLERS)  # the page's sampler menu
    assert _get(base, "/nope")[0] == 404


def test_feasible_pairs_are_the_budget_table(url):
    base, _ = url
    status, body = _get(base, "/api/feasible?model=digits-fpdm&budget=24")
    f = json.loads(body)
    # pre 1 + k + post 1 divides 24: k = 1, 2, 4, 6, 10, 22
    assert status == 200 and [(p["iters"], p["steps"]) for p in f["pairs"]] == \
        [(1, 8), (2, 6), (4, 4), (6, 3), (10, 2), (22, 1)]
    assert f["schedule"] is None
    status, body = _get(base, "/api/feasible?model=digits-dit&budget=24")
    assert [(p["iters"], p["steps"]) for p in json.loads(body)["pairs"]] == [(0, 4)]
    status, body = _get(base, "/api/feasible?model=nope&budget=24")
    assert status == 400 and "not served here" in json.loads(body)["error"]
    status, body = _get(base, "/api/feasible?model=digits-fpdm&budget=24&sampler=heun")  # 2n - 1 evaluations
    assert [(p["iters"], p["steps"]) for p in json.loads(body)["pairs"]] == [(6, 2), (22, 1)]
    status, body = _get(base, "/api/feasible?model=digits-fpdm&budget=24&sampler=lms")
    assert status == 400 and "sampler must be one of" in json.loads(body)["error"]


def test_sample_counts_the_budget_and_puts_the_dit_beside(url):
    base, _ = url
    status, r = _post(base, "/api/sample", {"model": "digits-fpdm", "budget": 24, "iters": 2, "seeds": "0-9"})
    assert status == 200
    p = r["model"]
    assert p["blocks_counted"] == 24 and p["steps"] == 6 and p["iters_run"] == [2] * 6
    assert p["grid"].startswith("data:image/png;base64,") and p["iters_chart"] and p["residual_chart"]
    assert r["dit"]["blocks_counted"] == 24 and r["dit"]["steps"] == 4  # depth 6
    status, r = _post(base, "/api/sample", {"model": "digits-fpdm", "budget": 32, "steps": 4,
                                            "profile": "increasing", "reuse": True, "tol": 0.01})
    assert status == 200 and r["model"]["blocks_counted"] == 32
    assert "not a multiple of its depth 6" in r["dit_note"] and "dit" not in r


@pytest.mark.parametrize("body,message", [
    ({"model": "digits-fpdm", "budget": 25, "iters": 2}, "feasible nearby: 24 (6 steps) or 28 (7 steps)"),
    ({"model": "digits-fpdm", "budget": 24, "iters": 2, "steps": 6}, "not both"),
    ({"model": "digits-fpdm", "budget": 24, "iters": 2, "seeds": "0-999"}, "at most 500 samples"),
    ({"model": "digits-fpdm", "budget": 10**9, "iters": 2}, "budget must be between 1 and 2000"),
    ({"model": "digits-fpdm", "budget": "many", "iters": 2}, "budget must be a whole number"),
    ({"model": "digits-fpdm", "budget": 24, "iters": 2, "label": 12}, "label must be between 0 and 9"),
    ({"model": "digits-fpdm", "budget": 24, "iters": 2, "seeds": "a-b"}, "--seeds 'a-b'"),
    ({"model": "nope", "budget": 24}, "not served here"),
    ({"model": "digits-fpdm", "budget": 24, "calibrated": True}, "no calibrated schedule for budget 24"),
    (b"{not json", "not valid JSON"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_input_is_a_message_and_the_server_goes_on(url, body, message):
    base, _ = url
    status, r = _post(base, "/api/sample", body)
    assert status == 400 and message in r["error"], r
    status, r = _post(base, "/api/sample", {"model": "digits-dit", "budget": 12, "seeds": "0-1"})
    assert status == 200 and r["model"]["blocks_counted"] == 12  # still serving


def test_ten_requests_at_once_are_all_answered(url):
    base, _ = url
    bodies = [{"model": "digits-fpdm", "budget": 24, "iters": k, "seeds": "0-3"} for k in (1, 2, 4, 6, 10)]
    bodies *= 2

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda b: _post(base, "/api/sample", b), bodies))
    assert [s for s, _ in answers] == [200] * 10
    assert all(r["model"]["blocks_counted"] == 24 for _, r in answers)


def test_a_job_that_waits_too_long_is_told_to_retry(url):
    base, server = url
    server.job.acquire()  # a job in progress
    old, server.queue_timeout = server.queue_timeout, 0.05
    try:
        status, r = _post(base, "/api/sample", {"model": "digits-dit", "budget": 12})
        assert status == 503 and "busy" in r["error"]
    finally:
        server.queue_timeout = old
        server.job.release()


def test_fid_on_demand(url):
    base, _ = url
    status, r = _post(base, "/api/fid", {"model": "digits-fpdm", "budget": 24, "iters": 2})
    assert status == 200 and r["samples"] == 500 and r["blocks_counted"] == 24
    assert 0 < r["digits_fid"] < 1000 and r["digits_fid_se"] > 0
    assert r["fid_name"] == "digits-fid" and r["fid"] == r["digits_fid"]


def test_fashion_models_are_offered_beside_their_own_dit(url):
    """The menu holds the Fashion built-ins too; an FPDM's DiT panel is a DiT of its own data (the digits
    DiT never stands beside the Fashion FPDM)."""
    base, server = url
    names = {m["name"] for m in json.loads(_get(base, "/api/models")[1])["models"]}
    assert "fashion-fpdm" in names
    status, r = _post(base, "/api/sample", {"model": "fashion-fpdm", "budget": 28, "iters": 2, "seeds": "0"})
    assert status == 200 and r["model"]["blocks_counted"] == 28
    assert r["model"]["name"] == "fashion-fpdm" and ("dit" in r) == ("fashion-dit" in names)
    assert r.get("dit", {}).get("name", "fashion-dit") == "fashion-dit"


def test_serve_command_checks_its_port(capsys):
    from fpdm.cli.app import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be in 0..65535, got 70000" in capsys.readouterr().err


def test_a_huge_seed_range_is_refused_before_it_is_built(url):
    """'0-99999999' is answered at once, without building a hundred million seeds (it took 21 s and
    10.5 GB before)."""
    import resource
    import time

    base, _ = url
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    status, r = _post(base, "/api/sample", {"model": "digits-fpdm", "budget": 120, "iters": 2,
                                             "seeds": "0-99999999"})
    assert status == 400 and "at most 500 samples per request, got 100,000,000" in r["error"]
    assert time.perf_counter() - start < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: under 100 MB more


def test_a_client_that_leaves_costs_no_traceback(url, capsys):
    """A client that disconnects before its answer: the server says nothing and goes on."""
    import socket

    base, _ = url
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps({"model": "digits-fpdm", "budget": 24, "iters": 2, "seeds": "0-63"}).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /api/sample HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset
    import time

    time.sleep(0.3)  # the abandoned job holds the model before the next one asks for it
    status, _ = _post(base, "/api/sample", {"model": "digits-fpdm", "budget": 24, "iters": 2, "seeds": "0"})
    time.sleep(0.5)  # jobs run one at a time: the abandoned one is done; its answer found no one
    assert status == 200 and "Traceback" not in capsys.readouterr().err
