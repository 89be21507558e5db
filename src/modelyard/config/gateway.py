"""Config for `modelyard serve`: where to listen, who may call, what is too big."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, PositiveFloat, PositiveInt, SecretStr, field_validator, model_validator

from modelyard.config.base import Spec


class CaptureSpec(Spec):
    """Keep what answered requests asked and got, in the request log, so the traffic can be
    replayed against another config (`modelyard traffic`, then `eval`, `compare` or `gate`).
    The log then holds prompts and answers: treat it as the users' data it is."""

    sample: float = Field(default=1.0, ge=0, le=1)
    """Share of answered requests kept."""
    targets: list[str] | None = None
    """Only requests to these systems or models (default: all)."""


class GatewaySpec(Spec):
    """The gateway section. Read once at startup; a reload changes systems, not the listener."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: PositiveInt = 1
    auth: Literal["auto", "required", "off"] = "auto"
    """`auto`: callers need a virtual key once any key exists or an admin key is set;
    `required`: always; `off`: never (a key sent still scopes its caller). The admin routes need
    the admin key whatever the mode, except from this machine while no key exists at all."""
    admin_key: SecretStr | None = None
    keys_db: str = ".modelyard/{config}/keys.sqlite3"
    """Virtual keys, relative to the config file (`{config}`: its file name), shared by the
    processes of one host. With `keys_url` set, read only to import what the database lacks."""
    keys_url: str | None = Field(default=None, pattern=r"^postgres")
    """`postgresql://user@host/db`: virtual keys every replica shares (instead of `keys_db`),
    so a key made or revoked on any host holds on all of them within about a second. At start,
    what the `keys_db` file holds and the database lacks (hashed keys with their ids,
    revocations) is imported."""
    keys_table_prefix: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Tables `<prefix>keys` and `<prefix>key_changes` (default: `request_log_table_prefix`)."""
    request_log: str | None = ".modelyard/{config}/requests.sqlite3"
    """Where every request's decision record is kept (None: memory only). With
    `request_log_url`, its folder holds `requests-outbox.sqlite3`, where records wait until
    the database takes them (None: they wait in memory, lost if the process is killed)."""
    request_log_url: str | None = Field(default=None, pattern=r"^postgres")
    """`postgresql://user@host/db`: one request log every replica writes (instead of
    `request_log`), so any replica answers `GET /v1/requests/{id}` and `modelyard traffic`
    exports what all of them captured."""
    request_log_table_prefix: str = Field(default="modelyard_", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    capture: CaptureSpec | None = None
    """Also keep answered requests' messages and answers in the request log (off by default)."""
    max_body_bytes: PositiveInt = 16 * 1024 * 1024
    max_messages: PositiveInt = 2000
    drain_timeout: PositiveFloat = 30.0
    """Seconds a shutdown waits for requests in flight."""
    stalled_client_timeout: PositiveFloat = 60.0
    """Seconds a send, of a stream or a whole answer, waits on a client that has stopped
    reading (its buffers full, nothing taken) before the response is cut and recorded as a
    client that left (499): the upstream call, the key's slot and the config it runs on are
    released."""
    watch_config: bool = False
    """Reload when the config file changes (as well as on SIGHUP and POST /admin/reload), and
    when a file a refused config named as missing appears."""

    @field_validator("keys_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        # As `state.url` is checked; the URL is never echoed: it may hold a password.
        try:
            urlsplit(value or "").port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            raise ValueError("is not a valid URL (not shown: it may hold a password)") from None
        return value

    @model_validator(mode="after")
    def _capture_needs_a_log(self) -> GatewaySpec:
        if self.capture is not None and self.request_log is None:
            raise ValueError("capture keeps traffic in the request log: set request_log too")
        return self
