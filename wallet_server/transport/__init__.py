"""gRPC transport: the server factory, interceptors, servicers, proto ⇄ domain mapping."""

from wallet_server.transport._server import (
    ServerPorts,
    WalletServer,
    build_auth_policy,
    create_server,
)

__all__ = ["ServerPorts", "WalletServer", "build_auth_policy", "create_server"]
