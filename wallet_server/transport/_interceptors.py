"""The interceptor chain: logging → audit → errors → authentication → authorization → servicer.

Each concern is one small interceptor object with ``async def intercept(call, proceed)``.
They are composed once per method (not per call) and installed on the server through a
single ``grpc.aio.ServerInterceptor``, which keeps the per-call cost to one wrapper.
Services outside ``wallet.v1`` (health, reflection) pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, NoReturn, Protocol, TypeAlias

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from sqlalchemy.ext.asyncio import AsyncEngine

from wallet_server.domain import (
    InvalidArgument,
    OperatorPrincipal,
    PartnerPrincipal,
    PermissionDenied,
    Principal,
    Reason,
    Unauthenticated,
    Unimplemented,
    UserPrincipal,
    WalletError,
)
from wallet_server.security import peer_certificate_from_pem
from wallet_server.services import (
    Authenticator,
    CallRecord,
    UnitOfWork,
    begin_call,
    record_unaudited_call,
)
from wallet_server.transport._errors import RpcFailure, failure_from_exception
from wallet_server.transport._policy import Access, access_for

_log = logging.getLogger("wallet_server.rpc")

_principal: ContextVar[Principal | None] = ContextVar("wallet_principal", default=None)


def current_principal() -> Principal | None:
    return _principal.get()


@dataclass(slots=True)
class Call:
    """One RPC as the interceptors see it."""

    method: str
    access: Access
    context: aio.ServicerContext[Any, Any]
    request: Any
    record: CallRecord
    principal: Principal | None = None
    code: str = "OK"
    extra: dict[str, Any] = field(default_factory=dict)


Proceed = Callable[["Call"], Awaitable[Any]]
MAX_AUDITED_REQUEST_ID = 64
MAX_UNKNOWN_METHOD_NAME = 128  # of a method that does not exist, in logs and the audit log
_ANYONE = (Access.PUBLIC, None)
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class Interceptor(Protocol):
    async def intercept(self, call: Call, proceed: Proceed) -> Any: ...


class LoggingInterceptor:
    """One structured line per RPC: method, principal, code, latency, request id."""

    async def intercept(self, call: Call, proceed: Proceed) -> Any:
        started = time.perf_counter()
        try:
            return await proceed(call)
        finally:
            if _log.isEnabledFor(logging.INFO):
                fields = {
                    "event": "rpc",
                    "method": call.method,
                    "principal": call.record.principal,
                    "code": call.code,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "request_id": call.record.request_id,
                    "peer": call.record.peer,
                }
                # Readable for handlers other than ours (tests, embedders); ours logs the fields.
                _log.info(
                    "%s %s %.3f ms",
                    call.method,
                    call.code,
                    fields["latency_ms"],
                    extra={"fields": fields},
                )


class AuditInterceptor:
    """Every call leaves an audit row. Use cases write it with their effect (same
    transaction); calls that committed nothing are audited here, after the fact."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def intercept(self, call: Call, proceed: Proceed) -> Any:
        try:
            return await proceed(call)
        finally:
            if not call.record.audited:
                try:
                    await record_unaudited_call(UnitOfWork(self._engine), call.code)
                except Exception:
                    _log.exception("could not write the audit row for %s", call.method)


class ErrorInterceptor:
    """Turns any exception into an :class:`RpcFailure` carrying the rich status."""

    async def intercept(self, call: Call, proceed: Proceed) -> Any:
        try:
            return await proceed(call)
        except RpcFailure as failure:
            call.code = failure.code_name
            raise
        except asyncio.CancelledError:
            # The client went away or its deadline passed; the audit row must not say OK.
            remaining = call.context.time_remaining()
            call.code = (
                "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
            )
            raise
        except Exception as exc:
            mapped = failure_from_exception(exc, call.method)
            call.code = mapped.code_name
            raise mapped from None


def _bearer_token(context: aio.ServicerContext[Any, Any]) -> str | None:
    headers = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    if not headers:
        return None
    # Several credentials are ambiguous: whichever one counted, the others were ignored.
    if len(headers) > 1:
        raise Unauthenticated(
            "send one authorization header, not several", reason=Reason.TOKEN_INVALID
        )
    scheme, _, token = str(headers[0]).partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    raise Unauthenticated(
        "authorization metadata must be 'Bearer <token>'", reason=Reason.TOKEN_INVALID
    )


def _peer_certificate_pem(context: aio.ServicerContext[Any, Any]) -> bytes | None:
    certs = context.auth_context().get("x509_pem_cert")
    return next(iter(certs), None) if certs else None


class AuthenticationInterceptor:
    """Bearer access token → user; verified client certificate → partner or operator.

    Which credential counts depends on what the method needs: user methods take a bearer
    token on either port; partner and admin methods need a client certificate, which only
    the mTLS port can carry.
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept(self, call: Call, proceed: Proceed) -> Any:
        if call.access is Access.PUBLIC:
            return await proceed(call)
        principal: Principal
        if call.access is Access.USER:
            token = _bearer_token(call.context)
            if token is None:
                raise Unauthenticated(
                    "this call needs 'authorization: Bearer <access token>'",
                    reason=Reason.CREDENTIALS_MISSING,
                )
            principal = await self._authenticator.user_from_bearer(token)
        else:
            pem = _peer_certificate_pem(call.context)
            if pem is None:
                raise Unauthenticated(
                    "this call needs a client certificate (use the mTLS port)",
                    reason=Reason.CREDENTIALS_MISSING,
                )
            principal = await self._authenticator.principal_from_certificate(
                peer_certificate_from_pem(pem)
            )
        call.principal = principal
        call.record.principal = principal.key
        reset = _principal.set(principal)
        try:
            return await proceed(call)
        finally:
            _principal.reset(reset)


class AuthorizationInterceptor:
    """The method's required role (and partner scope). Object ownership is checked in the
    use cases, where the objects are."""

    async def intercept(self, call: Call, proceed: Proceed) -> Any:
        access, principal = call.access, call.principal
        if access is Access.PUBLIC:
            return await proceed(call)
        allowed = (
            (access is Access.USER and isinstance(principal, UserPrincipal))
            or (access is Access.PARTNER and isinstance(principal, PartnerPrincipal))
            or (access is Access.OPERATOR and isinstance(principal, OperatorPrincipal))
        )
        if not allowed:
            raise PermissionDenied(
                f"{call.method} is not for this kind of caller",
                reason=Reason.WRONG_PRINCIPAL_KIND,
            )
        scope = call.extra.get("scope")
        if (
            isinstance(principal, PartnerPrincipal)
            and scope is not None
            and scope not in principal.scopes
        ):
            raise PermissionDenied(
                f"partner {principal.name!r} lacks the {scope!r} scope",
                reason=Reason.MISSING_SCOPE,
            )
        return await proceed(call)


@dataclass(frozen=True, slots=True)
class _Undecodable:
    """A request whose bytes are not the method's message. It goes through the chain like
    any request, so the caller is authenticated first and the call is logged and audited,
    and it is refused where the servicer would have been called."""

    message_type: str


def _parsing(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The method's deserializer, returning :class:`_Undecodable` instead of raising (gRPC
    would answer UNKNOWN with the exception's text, and before any interceptor ran)."""
    if deserializer is None:
        return None
    parse = deserializer
    message_type = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    name = message_type.full_name if message_type is not None else "request"

    def parse_or_mark(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return _Undecodable(name)

    return parse_or_mark


def _refuse_undecodable(request: _Undecodable) -> NoReturn:
    raise InvalidArgument(
        f"the request is not a valid {request.message_type} message (protobuf wire format)"
    )


def _compose(chain: Sequence[Interceptor], innermost: Proceed) -> Proceed:
    """The chain as one callable, built once per method: no closures per call."""
    proceed = innermost
    for interceptor in reversed(chain):
        proceed = partial(interceptor.intercept, proceed=proceed)
    return proceed


def _new_call(
    method: str,
    request: Any,
    context: aio.ServicerContext[Any, Any],
    rule: tuple[Access, str | None] | None = None,
) -> Call:
    access, scope = access_for(method) if rule is None else rule
    request_id = getattr(request, "request_id", "")
    record = CallRecord(
        method=method,
        peer=context.peer() or "",
        started_at=datetime.now(UTC),
        # Anyone can send anything here before authentication: keep the audit row small.
        request_id=request_id[:MAX_AUDITED_REQUEST_ID] if isinstance(request_id, str) else "",
    )
    begin_call(record)
    call = Call(method=method, access=access, context=context, request=request, record=record)
    if scope is not None:
        call.extra["scope"] = scope
    return call


class WalletServerInterceptor(aio.ServerInterceptor):
    """Installs the chain on every ``wallet.v1`` method."""

    def __init__(self, chain: Sequence[Interceptor]) -> None:
        self._chain = tuple(chain)
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if not method.startswith("/wallet.v1."):
            return handler
        if handler is None:
            # Not cached: the caller chooses these names, as many as it likes.
            return self._no_such_method(method[:MAX_UNKNOWN_METHOD_NAME])
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _no_such_method(self, method: str) -> Handler:
        """A method ``wallet.v1`` does not have: UNIMPLEMENTED with ErrorInfo, through the
        chain (logged and audited like any call), instead of gRPC's bare status. Nobody may
        call it, so no credential is asked for: reflection lists the methods there are
        anyway. The request's bytes are not read."""

        def refuse(call: Call) -> Awaitable[Any]:
            raise Unimplemented(
                f"{method} is not a method of this server", reason=Reason.UNIMPLEMENTED
            )

        chain = _compose(self._chain, refuse)

        async def unary_unary(request: bytes, context: aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await chain(_new_call(method, request, context, _ANYONE))
            except RpcFailure as failure:
                await context.abort_with_status(failure.status)

        return grpc.unary_unary_rpc_method_handler(unary_unary)

    def _wrap(self, method: str, handler: Handler) -> Handler:
        chain = self._chain
        # Handlers of an aio server are coroutine functions and async generators, whatever the
        # (synchronous) stub types say.
        if handler.unary_unary is not None:
            behaviour: Any = handler.unary_unary

            def respond(call: Call) -> Awaitable[Any]:
                if isinstance(call.request, _Undecodable):
                    _refuse_undecodable(call.request)
                return behaviour(call.request, call.context)  # type: ignore[no-any-return]

            unary_chain = _compose(chain, respond)

            async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                try:
                    return await unary_chain(_new_call(method, request, context))
                except RpcFailure as failure:
                    await context.abort_with_status(failure.status)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=_parsing(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            stream_behaviour: Any = handler.unary_stream

            async def drain(call: Call) -> None:
                # The chain wraps the whole stream: audit and logging see its final code.
                if isinstance(call.request, _Undecodable):
                    _refuse_undecodable(call.request)
                # Closed here, not when collected: a stream holds a place in the caller's
                # limit of open streams until its generators end.
                async with contextlib.aclosing(
                    stream_behaviour(call.request, call.context)
                ) as items:
                    async for item in items:
                        await call.context.write(item)

            stream_chain = _compose(chain, drain)

            async def unary_stream(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
                try:
                    await stream_chain(_new_call(method, request, context))
                except RpcFailure as failure:
                    await context.abort_with_status(failure.status)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=_parsing(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        # Client-streaming methods would bypass the chain: none exist, and none may slip in.
        raise RuntimeError(f"{method}: client-streaming RPCs are not supported by the chain")


def build_interceptor(engine: AsyncEngine, authenticator: Authenticator) -> WalletServerInterceptor:
    return WalletServerInterceptor(
        [
            LoggingInterceptor(),
            AuditInterceptor(engine),
            ErrorInterceptor(),
            AuthenticationInterceptor(authenticator),
            AuthorizationInterceptor(),
        ]
    )


__all__ = ["WalletError", "build_interceptor", "current_principal"]
