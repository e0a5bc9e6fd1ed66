"""Signing in: a user name and password for a short-lived bearer token; and who the token says you are."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.auth import Authenticated, unauthorized
from api.context import ApiContext, api_context
from api.errors import ApiError, field_problems
from api.schemas import MeOut, TokenOut, TokenRequest, problem_responses
from domain.access import PERMISSIONS, issue_token
from store.users import authenticate, get_user

router = APIRouter(prefix="/auth", tags=["auth"])

FORM = "application/x-www-form-urlencoded"

_TOKEN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TokenRequest.model_json_schema()},
            FORM: {"schema": TokenRequest.model_json_schema()},
        },
    }
}


def parse_token_request(content_type: str, body: bytes) -> TokenRequest:
    """A sign-in as JSON or as the OAuth2 password form (``grant_type=password&username=..&password=..``)."""
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ApiError(400, "invalid_encoding", "the body is not UTF-8") from error
    document: Any
    if media == "application/json":
        try:
            document = json.loads(text)
        except ValueError as error:
            raise ApiError(400, "invalid_json", f"the body is not JSON: {error}") from error
    elif media == FORM:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=10)
        except ValueError as error:
            raise ApiError(400, "invalid_form", f"the form cannot be read: {error}") from error
        document = dict(pairs)
        if len(document) != len(pairs):
            raise ApiError(422, "invalid_request", "a field is given more than once")
    else:
        raise ApiError(
            415, "unsupported_media_type", f"send application/json or {FORM}, not {media or 'no content type'}"
        )
    try:
        return TokenRequest.model_validate(document)
    except ValidationError as error:
        problems = field_problems([{**e, "loc": ("body", *e["loc"])} for e in error.errors()])
        raise ApiError(
            422, "invalid_request", "; ".join(f"{p['location']}: {p['message']}" for p in problems), problems=problems
        ) from error


def _sign_in(context: ApiContext, request: TokenRequest, client: str) -> TokenOut:
    with context.pool.connection() as conn:
        user = authenticate(conn, request.username, request.password, channel="api", client=client)
    if user is None:
        raise unauthorized("wrong user name or password", error=None)
    now = datetime.now(UTC)
    config = context.config
    token = issue_token(user.principal, secret=config.token_secret, now=now, ttl=config.token_ttl)
    principal = user.principal
    return TokenOut(
        access_token=token,
        expires_in=int(config.token_ttl.total_seconds()),
        expires_at=now + config.token_ttl,
        username=principal.username,
        role=principal.role,
        crew_id=principal.crew_id,
        department_code=principal.department_code,
        permissions=sorted(PERMISSIONS[principal.role]),
    )


@router.post(
    "/token",
    response_model=TokenOut,
    responses=problem_responses(400, 401, 415, 422),
    openapi_extra=_TOKEN_BODY,
    summary="Sign in: user name and password (JSON, or the OAuth2 password form) for a bearer token",
)
async def token(request: Request) -> TokenOut:
    sign_in = parse_token_request(request.headers.get("content-type", ""), await request.body())
    client = request.client.host if request.client else ""
    return await run_in_threadpool(_sign_in, api_context(request), sign_in, client)


@router.get("/me", response_model=MeOut, responses=problem_responses(401), summary="The signed-in user")
def me(request: Request, principal: Authenticated) -> MeOut:
    with api_context(request).pool.connection() as conn:
        user = get_user(conn, principal.username)
    return MeOut(
        username=principal.username,
        display_name=user.display_name if user else principal.username,
        role=principal.role,
        crew_id=principal.crew_id,
        department_code=principal.department_code,
        permissions=sorted(PERMISSIONS[principal.role]),
    )
