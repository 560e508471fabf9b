"""The four wallet.v1 services: parse and validate, call the use case, map the result."""

from wallet_server.transport.servicers._admin import AdminServicer
from wallet_server.transport.servicers._auth import AuthServicer
from wallet_server.transport.servicers._deps import Servicers
from wallet_server.transport.servicers._partner import PartnerServicer
from wallet_server.transport.servicers._wallet import WalletServicer

__all__ = ["AdminServicer", "AuthServicer", "PartnerServicer", "Servicers", "WalletServicer"]
