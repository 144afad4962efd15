"""Talking to an Argilla server: connecting, the API key, and failures turned into one-line errors.

Everything prefloop needs from the ``argilla`` SDK beyond its public resources lives here:

- the SDK's exception classes, which argilla 2.8 defines only in its private ``argilla._exceptions``
  module (``argilla`` exports none of them), imported in :func:`sdk_errors` and nowhere else;
- :func:`record_models`, the one call to the SDK's private HTTP layer (``client.api``), because the
  public ``dataset.records(...)`` cannot give a pull what it needs (see there).

The SDK is imported inside functions: ``prefloop --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from prefloop.errors import ConfigError, PrefloopError

from .rules import RecordPayload

API_KEY_ENV = "ARGILLA_API_KEY"
#: Records per listing request (a push's "already there" check, a pull's responses).
_LIST_PAGE = 500


class ArgillaBridgeError(PrefloopError):
    """Argilla could not be reached or used as configured."""


def sdk_errors() -> ModuleType:
    """The SDK's exception classes (``ArgillaAPIError``, ``ArgillaError``, ``ForbiddenError``, …).

    argilla 2.8 defines them only in the private module ``argilla._exceptions`` and exports none
    from the package, so catching them means importing it: this is the one place that does.
    """
    import argilla._exceptions as errors

    return errors


def api_key_from_env() -> str:
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(
            f"{API_KEY_ENV} is not set: prefloop reads the Argilla API key only from the environment",
            hint=f"copy your key from 'My settings' in the Argilla UI and `export {API_KEY_ENV}=...`",
        )
    return key


def space_headers(url: str) -> dict[str, str]:
    """``HF_TOKEN`` as a bearer token for a private Hugging Face Space (``*.hf.space``) only:
    the token never goes to any other host."""
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").lower()
    token = os.environ.get("HF_TOKEN", "").strip()
    return {"Authorization": f"Bearer {token}"} if token and host.endswith(".hf.space") else {}


def connect(config: Any) -> Any:
    """An authenticated ``rg.Argilla`` client for ``config`` (an :class:`ArgillaConfig`).

    Unreachable servers, refused keys and servers that are not Argilla 2 become
    :class:`ArgillaBridgeError`s that say which and what to do.
    """
    import httpx
    from argilla import Argilla

    errors = sdk_errors()
    key = api_key_from_env()
    url = config.api_url.rstrip("/")
    try:
        with quiet():
            return Argilla(
                api_url=url, api_key=key, timeout=max(1, math.ceil(config.timeout_s)), retries=config.retries,
                headers=space_headers(url),
            )
    except errors.ArgillaCredentialsError:
        raise ArgillaBridgeError(
            f"Argilla at {url} refused the API key in {API_KEY_ENV}",
            hint="check the key under 'My settings' in the Argilla UI (a key belongs to one server)",
        ) from None
    except httpx.TransportError as exc:
        raise ArgillaBridgeError(
            f"cannot reach Argilla at {url}: {type(exc).__name__}: {exc or 'no answer'}",
            hint="start the server (docker compose up, or wake the Hugging Face Space) or fix argilla.api_url in prefloop.yaml",
        ) from None
    except errors.ArgillaAPIError as exc:
        raise ArgillaBridgeError(
            f"{url} did not answer like an Argilla 2 server (HTTP {exc.status_code} on /api/v1/me)",
            hint="argilla.api_url must be the server's base URL, e.g. http://localhost:6900 or https://<space>.hf.space",
        ) from None


@dataclass
class Writing:
    """What a push is writing right now, so that a refused write names its dataset and records."""

    dataset: str | None = None
    batch: list[RecordPayload] = field(default_factory=list)


@contextlib.contextmanager
def talking_to(url: str, writing: Writing | None = None) -> Iterator[None]:
    """Turn transport and HTTP failures after connecting into one-line errors that say whose fault
    it is: the connection, the key (401/403), or a value Argilla refuses (400/422)."""
    import httpx

    errors = sdk_errors()
    try:
        yield
    except httpx.TransportError as exc:
        raise ArgillaBridgeError(
            f"lost the connection to Argilla at {url}: {type(exc).__name__}",
            hint="check the server, then run the command again (push and pull are safe to repeat)",
        ) from None
    except (errors.ArgillaAPIError, httpx.HTTPStatusError) as exc:
        code = getattr(exc, "status_code", None) or exc.response.status_code  # type: ignore[union-attr]
        raise _refusal(url, code, exc, writing or Writing()) from None


def _refusal(url: str, code: int, exc: Exception, writing: Writing) -> ArgillaBridgeError:
    reasons = _server_reasons(exc)
    if code == 401:
        return ArgillaBridgeError(
            f"Argilla at {url} no longer accepts the API key in {API_KEY_ENV} (HTTP 401)",
            hint="check the key under 'My settings' in the Argilla UI (a key belongs to one server)",
        )
    if code == 403:
        return ArgillaBridgeError(
            f"Argilla at {url} refused a request (HTTP 403): the user of {API_KEY_ENV} may not do this",
            hint="an owner's API key (or an admin's in that workspace) can do everything prefloop needs",
        )
    if code in (400, 422):
        where = f"dataset {writing.dataset}" if writing.dataset else "a request"
        lines = []
        for position, place, reason in reasons:
            rec = writing.batch[position].id if position is not None and position < len(writing.batch) else None
            lines.append(", ".join(x for x in (f"record {rec}" if rec else "", place and f"field {place}", reason) if x))
        return ArgillaBridgeError(
            f"Argilla at {url} refused a value in {where} (HTTP {code}): " + "; ".join(lines or ["no reason given"]),
            hint="this dataset breaks a rule of the Argilla server that prefloop does not check before writing "
            "(e.g. bounds set by hand on a metadata property): fix that dataset, or set a new argilla.dataset_prefix, "
            "then push again (records already there are not sent twice)",
        )
    return ArgillaBridgeError(
        f"Argilla at {url} failed a request (HTTP {code}): " + "; ".join(r for _, _, r in reasons),
        hint="check the Argilla server's log, then run the command again (push and pull are safe to repeat)",
    )


_POSITION = re.compile(r"^Record at position (\d+) is not valid because (.*)$", re.DOTALL)


def _server_reasons(exc: Exception) -> list[tuple[int | None, str, str]]:
    """(record position in the batch, field, reason) for each complaint in an Argilla error body."""
    response = getattr(exc, "response", None) or getattr(exc.__context__, "response", None)
    try:
        body = response.json() if response is not None else json.loads(str(exc).split("Details: ", 1)[1])
    except (ValueError, IndexError):
        return [(None, "", _one_line(str(exc)))]
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, str):
        m = _POSITION.match(detail)
        return [(int(m[1]), "", _one_line(m[2]))] if m else [(None, "", _one_line(detail))]
    errors = (detail or {}).get("params", {}).get("errors") if isinstance(detail, dict) else None
    if not errors:
        return [(None, "", _one_line(json.dumps(detail)))]
    out: list[tuple[int | None, str, str]] = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", []) if x != "body"]
        position = int(loc[1]) if len(loc) > 1 and loc[0] == "items" and loc[1].isdigit() else None
        place = ".".join(loc[2:] if position is not None else loc)
        out.append((position, place, _one_line(str(e.get("msg", "")))))
    return out


def _one_line(text: str, limit: int = 300) -> str:
    """Server text for a one-line error: control characters escaped, whitespace collapsed, cut short."""
    text = " ".join("".join(c if c.isprintable() or c.isspace() else ascii(c)[1:-1] for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the SDK's own tqdm bars and warnings (prefloop reports progress itself)."""
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------
# Resources, through the SDK's public collections
# ---------------------------------------------------------------------------------------------
def find_workspace(client: Any, name: str, url: str) -> Any:
    """The workspace ``name`` (an ``rg.Workspace``); a missing one is an error that lists those there."""
    try:
        with quiet():
            workspaces = list(client.workspaces)
    except sdk_errors().ArgillaAPIError as exc:
        raise ArgillaBridgeError(f"Argilla at {url} would not list workspaces (HTTP {exc.status_code})") from None
    for ws in workspaces:
        if ws.name == name:
            return ws
    available = ", ".join(sorted(ws.name for ws in workspaces)) or "none"
    raise ArgillaBridgeError(
        f"workspace {name!r} does not exist on Argilla at {url} (or this key's user is not a member); available: {available}",
        hint="create it in Argilla (owner: `rg.Workspace(name).create()` or the UI) and add your annotators, or set argilla.workspace",
    )


def datasets_in(workspace: Any) -> dict[str, Any]:
    """name → ``rg.Dataset`` (not loaded: no settings yet) for every dataset in the workspace."""
    with quiet():
        return {ds.name: ds for ds in workspace.datasets}


def is_published(dataset: Any) -> bool:
    """Whether a dataset was published (Argilla creates a draft, then its settings, then publishes)."""
    return getattr(dataset.api_model(), "status", "ready") == "ready"


def username(client: Any, user_id: str) -> str:
    """The Argilla username of ``user_id``; the id itself for a deleted user or a key that may not read users."""
    try:
        with quiet():
            user = client.users(id=user_id)
    except sdk_errors().ArgillaAPIError:
        return user_id
    return user.username if user is not None else user_id


def external_ids(dataset: Any) -> set[str]:
    """The external id of every record in ``dataset`` (responses and suggestions left out)."""
    with quiet():
        return {r.id for r in dataset.records(batch_size=_LIST_PAGE, with_suggestions=False, with_responses=False)}


def record_models(client: Any, dataset: Any) -> list[Any]:
    """Every record of ``dataset`` with its responses, as the server sends them (``RecordModel``s).

    The one private SDK call in prefloop: ``client.api.records.list``. The public
    ``dataset.records(with_responses=True)`` turns each user's response into one ``rg.Response``
    per answered question, so in argilla 2.8 it drops a response without values (a discarded
    record becomes invisible instead of a skip) and reduces a ranking to its values without their
    ranks (a ranking with two responses at the same rank could no longer be told apart and
    refused); it also hides the record's server id, which a pull keeps to recognise a withdrawn answer.
    (Checked: pulling through the public listing, the round-trip test's discarded record was not
    imported as a skip.)
    """
    out: list[Any] = []
    offset = 0
    while True:
        page = client.api.records.list(
            dataset_id=dataset.id, offset=offset, limit=_LIST_PAGE, with_suggestions=False, with_responses=True
        )
        out.extend(page)
        if len(page) < _LIST_PAGE:
            return out
        offset += len(page)
