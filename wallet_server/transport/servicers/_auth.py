"""AuthService: sign-up, sign-in, sessions."""

from __future__ import annotations

from typing import Any

from grpc import aio
from wallet.v1 import auth_pb2, auth_pb2_grpc

from wallet_server import services
from wallet_server.domain import User
from wallet_server.transport._mapping import collect, parse_text, timestamp
from wallet_server.transport.servicers._deps import Servicers, user_caller

Context = aio.ServicerContext[Any, Any]


def _user(user: User) -> auth_pb2.User:
    return auth_pb2.User(
        user_id=str(user.user_id),
        username=user.username,
        display_name=user.display_name,
        kyc_tier=user.kyc_tier,
        totp_enabled=user.totp_enabled,
        create_time=timestamp(user.created_at),
    )


def _tokens(tokens: services.SessionTokens) -> auth_pb2.SessionTokens:
    return auth_pb2.SessionTokens(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        access_token_expire_time=timestamp(tokens.access_token_expires_at),
        refresh_token_expire_time=timestamp(tokens.refresh_token_expires_at),
        session_id=str(tokens.session_id),
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, deps: Servicers) -> None:
        self._deps = deps

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Context
    ) -> auth_pb2.RegisterResponse:
        user = await services.register(
            services.RegisterUser(
                username=request.username,
                password=request.password,
                display_name=request.display_name,
            ),
            self._deps.uow(),
            self._deps.policy,
        )
        return auth_pb2.RegisterResponse(user=_user(user))

    async def Login(
        self, request: auth_pb2.LoginRequest, context: Context
    ) -> auth_pb2.LoginResponse:
        collect(
            lambda: parse_text(request.username, "username", max_length=64, required=True),
            lambda: parse_text(request.device_name, "device_name", max_length=100),
        )
        tokens = await services.log_in(
            services.LogIn(
                username=request.username,
                password=request.password,
                device_name=request.device_name,
            ),
            self._deps.uow(),
            self._deps.policy,
        )
        return auth_pb2.LoginResponse(tokens=_tokens(tokens))

    async def RefreshSession(
        self, request: auth_pb2.RefreshSessionRequest, context: Context
    ) -> auth_pb2.RefreshSessionResponse:
        parse_text(request.refresh_token, "refresh_token", max_length=200, required=True)
        tokens = await services.refresh_session(
            services.RefreshSession(refresh_token=request.refresh_token),
            self._deps.uow(),
            self._deps.policy,
        )
        return auth_pb2.RefreshSessionResponse(tokens=_tokens(tokens))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Context
    ) -> auth_pb2.LogoutResponse:
        await services.log_out(services.LogOut(caller=user_caller()), self._deps.uow())
        return auth_pb2.LogoutResponse()

    async def GetMe(
        self, request: auth_pb2.GetMeRequest, context: Context
    ) -> auth_pb2.GetMeResponse:
        user = await services.get_me(services.GetMe(caller=user_caller()), self._deps.uow())
        return auth_pb2.GetMeResponse(user=_user(user))
