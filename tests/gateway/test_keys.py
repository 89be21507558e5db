"""Virtual keys: scoping, revocation, admin routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import openai
import pytest
from tests.gateway.conftest import SYSTEMS, Running
from typer.testing import CliRunner

from modelyard.cli import app as cli
from modelyard.cost.bounds import cost_bound
from modelyard.gateway.keys import SqliteKeyStore
from modelyard.types import ChatRequest, Message

ADMIN = """
gateway:
  admin_key: admin-secret-123456
"""


def ask(running: Running, key: str, model: str = "support", text: str = "ping") -> str | None:
    client = openai.OpenAI(base_url=running.openai_url, api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return reply.choices[0].message.content


def create_key(running: Running, **body: object) -> dict[str, object]:
    reply = httpx2.post(
        f"{running.url}/admin/keys",
        json=body,
        headers={"authorization": "Bearer admin-secret-123456"},
    )
    assert reply.status_code == 201, reply.text
    return reply.json()  # type: ignore[no-any-return]


def test_key_required_once_an_admin_key_is_set(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway(ADMIN)
    with pytest.raises(openai.AuthenticationError):
        ask(running, "not-a-key")


def test_scoped_key_may_use_only_its_systems(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway(ADMIN)
    key = create_key(running, name="team-a", systems=["support"])
    assert ask(running, str(key["key"])) == "pong"
    with pytest.raises(openai.PermissionDeniedError):
        ask(running, str(key["key"]), model="strong")
    models = openai.OpenAI(base_url=running.openai_url, api_key=str(key["key"])).models.list()
    assert [m.id for m in models] == ["support"]


def test_a_scoped_keys_typo_is_told_what_it_meant_among_its_own_names(
    serve_gateway: Callable[..., Running],
) -> None:
    """A name outside the key's scope is refused alike whether the config has it or not (the
    key's /v1/models hides the others), and a slip of the keyboard is told the name it meant,
    as a key for every system is."""
    running = serve_gateway(ADMIN)
    key = create_key(running, name="team-a", systems=["support", "cheap"])
    for typo in ("suport", "Support"):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            ask(running, str(key["key"]), model=typo)
        assert (
            f"this key may not use {typo!r}; did you mean 'support'? it may use support, cheap"
            in str(caught.value)
        )
    with pytest.raises(openai.PermissionDeniedError) as caught:
        ask(running, str(key["key"]), model="strong")  # in the config, not in the key's scope
    assert "this key may not use 'strong'; it may use support, cheap" in str(caught.value)


def test_a_reload_that_removes_what_a_key_names_says_which_key(
    serve_gateway: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    """`keys create` refuses a name the config lacks; a reload that removes one a key names is
    let through (the key may be meant for a later config), but the operator is told which key
    now gets 404s, and only once."""
    running = serve_gateway(ADMIN)
    key = create_key(running, name="team-b", systems=["support", "strong"])
    admin = {"authorization": "Bearer admin-secret-123456"}
    strong = '  strong:\n    local: {type: fake, default: "the strong answer"}\n'
    without = SYSTEMS.replace(strong + "    price: {input: 10.0, output: 20.0}\n", "")
    running.config.write_text(without + ADMIN, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="modelyard.gateway"):
        assert httpx2.post(f"{running.url}/admin/reload", headers=admin).status_code == 200
        running.config.write_text(without.replace("pong", "pong!") + ADMIN, encoding="utf-8")
        assert httpx2.post(f"{running.url}/admin/reload", headers=admin).status_code == 200
    told = [r.getMessage() for r in caplog.records if str(key["id"]) in r.getMessage()]
    assert told == [
        f"key {key['id']} (team-b) names strong, which {running.config.name} does not have: "
        "its callers get 404 for it"
    ], told


def test_revoked_key_is_refused_within_a_second(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway(ADMIN)
    store = SqliteKeyStore(
        running.config.parent / ".modelyard" / running.config.name / "keys.sqlite3"
    )
    # As `modelyard keys create` would, from another process.
    secret, key = asyncio.run(store.create("cli-made"))
    deadline = time.monotonic() + 3
    while True:
        try:
            assert ask(running, secret) == "pong"
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "new key never accepted"
            time.sleep(0.1)
    assert asyncio.run(store.revoke(key.id))
    time.sleep(1.5)
    with pytest.raises(openai.AuthenticationError):
        ask(running, secret)


def test_revoking_the_last_key_does_not_open_the_gateway(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()  # no admin key: open until a key is made
    store = SqliteKeyStore(
        running.config.parent / ".modelyard" / running.config.name / "keys.sqlite3"
    )
    secret, key = asyncio.run(store.create("only"))
    deadline = time.monotonic() + 3
    while True:
        try:
            ask(running, "not-a-key")
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "a made key never closed the gateway"
        time.sleep(0.1)
    assert asyncio.run(store.revoke(key.id))
    deadline = time.monotonic() + 10  # the gateway reads the key store about once a second
    while True:
        try:
            ask(running, secret)
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "the revoked key was never refused"
        time.sleep(0.1)
    with pytest.raises(openai.AuthenticationError):
        ask(running, "not-a-key")


def test_admin_routes_need_the_admin_key(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway(ADMIN)
    key = create_key(running, name="user")
    reply = httpx2.post(
        f"{running.url}/admin/reload", headers={"authorization": f"Bearer {key['key']}"}
    )
    assert reply.status_code == 403


def test_request_record_visible_to_its_key_only(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway(ADMIN)
    owner, other = create_key(running, name="owner"), create_key(running, name="other")
    client = openai.OpenAI(base_url=running.openai_url, api_key=str(owner["key"]))
    raw = client.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "ping"}]
    )
    request_id = raw.headers["x-request-id"]
    url = f"{running.url}/v1/requests/{request_id}"
    assert httpx2.get(url, headers={"authorization": f"Bearer {owner['key']}"}).status_code == 200
    assert httpx2.get(url, headers={"authorization": f"Bearer {other['key']}"}).status_code == 404
    assert (
        httpx2.get(url, headers={"authorization": "Bearer admin-secret-123456"}).status_code == 200
    )


def test_secrets_are_stored_hashed(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway(ADMIN)
    key = create_key(running, name="x")
    raw = (running.config.parent / ".modelyard" / running.config.name / "keys.sqlite3").read_bytes()
    assert str(key["key"]).encode() not in raw


def test_key_rpm_limit_refuses_with_retry_after(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway(ADMIN)
    key = create_key(running, name="slow", rpm=2)
    assert ask(running, str(key["key"])) == "pong"
    assert ask(running, str(key["key"])) == "pong"
    with pytest.raises(openai.RateLimitError) as caught:
        ask(running, str(key["key"]))
    assert int(caught.value.response.headers["retry-after"]) > 0


def record_of(running: Running, request_id: str) -> dict[str, object]:
    """The request log's record of `request_id`, once written (records go in batches)."""
    url = f"{running.url}/v1/requests/{request_id}"
    admin = {"authorization": "Bearer admin-secret-123456"}
    for _ in range(100):
        reply = httpx2.get(url, headers=admin)
        if reply.status_code == 200:
            return reply.json()  # type: ignore[no-any-return]
        threading.Event().wait(0.05)
    raise AssertionError(f"no record of {request_id}")


def test_requests_the_gateway_refuses_are_in_the_request_log(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(ADMIN)
    key = create_key(running, name="slow", rpm=1, systems=["support"])
    ask(running, str(key["key"]))
    with pytest.raises(openai.RateLimitError) as limited:
        ask(running, str(key["key"]))
    with pytest.raises(openai.PermissionDeniedError) as scoped:
        ask(running, str(key["key"]), model="strong")
    assert "this key may not use 'strong'; it may use support" in str(scoped.value)
    for caught, status, code in (
        (limited.value, 429, "key_rate_limited"),
        (scoped.value, 403, "model_not_allowed"),
    ):
        record = record_of(running, caught.response.headers["x-request-id"])
        assert record["status"] == status
        assert str(record["error"]).startswith(code), record
        assert record["key_id"] == key["id"] and record["cost"] == 0


def test_key_concurrency_limit_refuses_the_extra_request(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(ADMIN)
    key = str(create_key(running, name="one-at-a-time", max_concurrency=1)["key"])
    client = openai.OpenAI(base_url=running.openai_url, api_key=key, max_retries=0)
    slow = threading.Thread(target=ask, args=(running, key, "support", "slow"))
    slow.start()  # "slow" takes 0.3 s upstream
    deadline = time.monotonic() + 5
    while running.app.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "ping"}]
        )
    slow.join()
    assert caught.value.code == "concurrency_limit"
    assert "too many concurrent requests for this key (its limit is 1)" in caught.value.message
    assert ask(running, key) == "pong"  # the slot is free again


def test_key_budget_refuses_once_spend_could_pass_it(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway(ADMIN)
    # "strong" costs $10/$20 per million tokens: a handful of requests exhaust $0.002.
    key = create_key(running, name="capped", budget=0.002)
    client = openai.OpenAI(base_url=running.openai_url, api_key=str(key["key"]), max_retries=0)
    spent = 0.0
    refused = None
    for _ in range(50):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="strong", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
            )
            spent += float(raw.headers["x-modelyard-cost"])
        except openai.RateLimitError as exc:
            refused = exc
            break
    assert refused is not None, "the key's budget never refused"
    assert refused.body["type"] == "budget_exceeded"  # type: ignore[index]
    # spent for the month: the SDKs are told when it frees and not to retry into it
    assert refused.response.headers["x-should-retry"] == "false"
    assert int(refused.response.headers["retry-after"]) > 60
    assert spent <= 0.002
    # Refused only when the request's worst case could really pass what is left.
    request = ChatRequest(messages=(Message(role="user", content="hi"),), max_tokens=20)
    worst = cost_bound(running.app.live.current.models["strong"], request)
    assert spent + worst > 0.002
    assert spent > 0.002 - 2 * worst


def test_a_request_alone_over_a_keys_budget_is_told_no_retry_can_fit(
    serve_gateway: Callable[..., Running],
) -> None:
    # Its worst case alone is above the limit: the 429 carried retry-after until the month
    # ends, though no wait would ever let it through.
    running = serve_gateway(ADMIN)
    key = create_key(running, name="capped", budget=0.002)
    client = openai.OpenAI(base_url=running.openai_url, api_key=str(key["key"]), max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:  # up to $0.004 ("strong": $20/M out)
        client.chat.completions.create(
            model="strong", max_tokens=200, messages=[{"role": "user", "content": "hi"}]
        )
    refused = caught.value
    assert refused.body["type"] == "budget_exceeded"  # type: ignore[index]
    assert refused.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.response.headers
    assert f"budget virtual-key (key {key['id']}" in refused.message
    assert "this request alone may cost more than the budget's limit" in refused.message
    assert str(key["key"]) not in refused.message


def test_a_keys_own_budget_alerts_at_its_thresholds_and_when_reached(
    serve_gateway: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    # Configured budgets alert at 50/80/100 % and when they refuse; a key's own budget
    # (`keys create --budget`) refused its requests without a word to the operator.
    running = serve_gateway(ADMIN)
    key = create_key(running, name="capped", budget=0.002)
    client = openai.OpenAI(base_url=running.openai_url, api_key=str(key["key"]), max_retries=0)
    with contextlib.suppress(openai.RateLimitError):
        for _ in range(50):
            client.chat.completions.create(
                model="strong", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
            )
    alerts = [r.getMessage() for r in caplog.records if r.name == "modelyard.alerts"]
    own = [a for a in alerts if f"budget virtual-key (key {key['id']}" in a]
    assert any("[budget_threshold]" in a and "passed 50%" in a for a in own), alerts
    assert any("[budget_reached]" in a for a in own), alerts


def test_budget_refusals_give_back_the_keys_concurrency_slot(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(ADMIN)
    key = str(create_key(running, name="both", budget=0.01, max_concurrency=1)["key"])
    client = openai.OpenAI(base_url=running.openai_url, api_key=key, max_retries=0)
    for _ in range(3):  # each worst case ($10/M in, $20/M out × 50,000 tokens) is over budget
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(
                model="strong", max_tokens=50_000, messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.body["type"] == "budget_exceeded"  # type: ignore[index]
    assert ask(running, key) == "pong"  # not refused for want of a slot


def test_a_stranger_gets_401_before_the_body_is_read(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway(ADMIN)
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings"):
        reply = httpx2.post(
            f"{running.url}{path}",
            content=b"{not json",
            headers={"content-type": "application/json", "authorization": "Bearer nope"},
        )
        assert reply.status_code == 401, path


def test_refused_requests_are_counted_and_failures_are_not_counted_twice(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(ADMIN)
    key = str(create_key(running, name="metered")["key"])
    with pytest.raises(openai.AuthenticationError):
        ask(running, "not-a-key")
    with pytest.raises(openai.NotFoundError):
        ask(running, key, model="nope")
    with pytest.raises(openai.InternalServerError):
        ask(running, key, model="broken")  # a system failure: counted once, as a failed request
    text = httpx2.get(f"{running.url}/metrics").text
    refused = [line for line in text.splitlines() if line.startswith("modelyard_refused_total{")]
    assert sorted(line.split("status=")[1] for line in refused) == ['"401"} 1.0', '"404"} 1.0']
    assert all('route="/v1/chat/completions"' in line for line in refused)
    assert 'modelyard_errors_total{kind="unavailable",system="broken"} 1.0' in text


def test_keys_made_before_per_config_folders_still_guard_the_gateway(tmp_path: Path) -> None:
    """An upgrade must not open a gateway whose keys sit at the old `.modelyard/keys.sqlite3`
    (an empty key store lets anyone in)."""

    from modelyard.gateway.app import create_app

    config = tmp_path / "prod.yaml"
    config.write_text(SYSTEMS)
    asyncio.run(SqliteKeyStore(tmp_path / ".modelyard" / "keys.sqlite3").create("old"))
    app = create_app(config)
    assert app.keys.store.path == tmp_path / ".modelyard" / "keys.sqlite3"
    assert not app.keys.open


def test_a_keys_tpm_sits_beside_the_table_an_older_release_inserts_into(tmp_path: Path) -> None:
    """The upgrade of a key file an older release shares: its INSERT lists no columns (one
    more column would refuse it), its reader names its own, and its migration runner sets the
    schema version back to its own count; the tpm of the keys made here survives all three."""
    path = tmp_path / "keys.sqlite3"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute(  # the file as the release before tpm left it
            "CREATE TABLE virtual_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, "
            "name TEXT NOT NULL, systems TEXT NOT NULL, rpm INTEGER, budget REAL, "
            "max_concurrency INTEGER, admin INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, "
            "revoked REAL)"
        )
        db.execute("INSERT INTO schema_version VALUES (1)")
    _, metered = asyncio.run(SqliteKeyStore(path).create("metered", tpm=500, rpm=3))
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute(  # the older release's own INSERT
            "INSERT INTO virtual_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            ("key_old", "a" * 64, "old", '["*"]', 3, None, None, 0, time.time()),
        )
        rows = db.execute(
            "SELECT hash, id, name, systems, rpm, budget, max_concurrency, admin, created, "
            "revoked FROM virtual_keys ORDER BY created"
        ).fetchall()
        assert [row[2] for row in rows] == ["metered", "old"]
        db.execute("UPDATE schema_version SET version = 1")  # its runner, opening the file
    keys = asyncio.run(SqliteKeyStore(path).all())
    assert [(k.name, k.tpm) for k in keys] == [("metered", 500), ("old", None)]
    assert keys[0] == metered


def test_the_keys_commands_make_and_list_a_keys_tpm(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", str(config), "--name", "ops", "--tpm", "40000"])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(cli, ["keys", "list", str(config)], env={"COLUMNS": "200"})
    header, row = (line for line in listed.output.splitlines() if "rpm" in line or "ops" in line)
    cells = [c.strip() for c in row.split("│")]
    assert cells[[c.strip() for c in header.split("┃")].index("tpm")] == "40000"
    refused = runner.invoke(cli, ["keys", "create", str(config), "--name", "x", "--tpm", "0"])
    assert refused.exit_code != 0


def test_the_keys_list_shows_a_keys_max_concurrency(tmp_path: Path) -> None:
    # An operator checking a key's limits saw its rpm, tpm and budget, not its concurrency.
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    runner = CliRunner()
    made = runner.invoke(
        cli, ["keys", "create", str(config), "--name", "ops", "--max-concurrency", "3"]
    )
    assert made.exit_code == 0, made.output
    listed = runner.invoke(cli, ["keys", "list", str(config)], env={"COLUMNS": "200"})
    header, row = (line for line in listed.output.splitlines() if "rpm" in line or "ops" in line)
    columns = [c.strip() for c in header.split("┃")]
    assert [c.strip() for c in row.split("│")][columns.index("max_concurrency")] == "3"


def test_the_admin_api_makes_and_lists_a_keys_tpm(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway(ADMIN)
    made = create_key(running, name="metered", tpm=40000)
    assert made["tpm"] == 40000
    listed = httpx2.get(
        f"{running.url}/admin/keys", headers={"authorization": "Bearer admin-secret-123456"}
    ).json()["keys"]
    assert [(k["name"], k["tpm"]) for k in listed] == [("metered", 40000)]
    refused = httpx2.post(
        f"{running.url}/admin/keys",
        json={"name": "x", "tpm": -5},
        headers={"authorization": "Bearer admin-secret-123456"},
    )
    assert refused.status_code == 400 and "tpm: expected a positive integer" in refused.text


@pytest.fixture
def priced_embedder(hosted_embedder: Callable[[str], Running]) -> Running:
    """A gateway with `emb`, a hosted embedder at $1,000 per million input tokens."""
    return hosted_embedder(ADMIN)


def test_key_budget_holds_for_embeddings(priced_embedder: Running) -> None:
    key = create_key(priced_embedder, name="capped", systems=["emb"], budget=0.05)
    client = openai.OpenAI(base_url=priced_embedder.openai_url, api_key=str(key["key"]))
    spent, refused = 0.0, None
    for _ in range(50):
        try:
            raw = client.with_options(max_retries=0).embeddings.with_raw_response.create(
                model="emb", input=["hello world", "a second text"]
            )
            spent += float(raw.headers["x-modelyard-cost"])
        except openai.RateLimitError as exc:
            refused = exc
            break
    assert refused is not None, f"the key's budget never refused (spent ${spent:.4f})"
    assert refused.body["type"] == "budget_exceeded"  # type: ignore[index]
    assert 0 < spent <= 0.05


def test_key_rpm_limit_holds_for_embeddings(priced_embedder: Running) -> None:
    key = create_key(priced_embedder, name="slow", systems=["emb"], rpm=2)
    client = openai.OpenAI(
        base_url=priced_embedder.openai_url, api_key=str(key["key"]), max_retries=0
    )
    for _ in range(2):
        client.embeddings.create(model="emb", input="hello")
    with pytest.raises(openai.RateLimitError) as caught:
        client.embeddings.create(model="emb", input="hello")
    assert caught.value.code == "key_rate_limited"


def test_the_folder_of_keys_spend_and_the_request_log_is_this_users_only(
    serve_gateway: Callable[..., Running],
) -> None:
    # The request log quotes prompts; on a shared host the folder was readable by everyone.
    running = serve_gateway(ADMIN)
    create_key(running, name="x")
    folder = running.config.parent / ".modelyard" / running.config.name
    assert {p.name for p in folder.iterdir()} >= {"keys.sqlite3", "requests.sqlite3"}
    assert folder.stat().st_mode & 0o777 == 0o700


def test_an_older_folder_others_can_read_is_named_in_a_warning(
    serve_gateway: Callable[..., Running], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / ".modelyard" / "config.yaml"
    folder.mkdir(parents=True)
    folder.chmod(0o755)  # as an earlier version left it
    with caplog.at_level(logging.WARNING, logger="modelyard"):
        running = serve_gateway(ADMIN)
        create_key(running, name="x")
    assert running.config.parent / ".modelyard" / running.config.name == folder
    warnings = [
        r.getMessage() for r in caplog.records if "can be read by other users" in r.getMessage()
    ]
    assert len(warnings) == 1 and f"chmod 700 {folder}" in warnings[0]
    assert folder.stat().st_mode & 0o777 == 0o755  # left as it is


def test_key_budget_reservations_are_leases_the_process_keeper_renews(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(ADMIN)
    key = create_key(running, name="leased", budget=1.0)
    assert ask(running, str(key["key"])) == "pong"
    limits = running.app.chat.key_limits
    services = running.app.live.resources.services
    keepers = [service for name, service in services.items() if name.startswith("leases|")]
    assert keepers == [limits.leases]
    assert limits.book.leases is limits.leases
    assert limits.book.store is limits.leases.store
