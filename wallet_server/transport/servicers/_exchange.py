"""RPCs of exchange, mixed into the service classes."""

from __future__ import annotations

from typing import Any

from grpc import aio
from wallet.v1 import admin_pb2, wallet_pb2

from wallet_server import services
from wallet_server.domain import (
    ExchangeRate,
    InvalidArgument,
    Quote,
    parse_currency,
    parse_rate,
)
from wallet_server.transport._mapping import (
    collect,
    decode_page_token,
    encode_page_token,
    money_to_proto,
    parse_amount,
    parse_page_size,
    parse_request_id,
    parse_uuid,
    timestamp,
    transaction_to_proto,
)
from wallet_server.transport.servicers._deps import Servicers, operator_caller, user_caller

Context = aio.ServicerContext[Any, Any]

_RATES_SCOPE = "exchange-rates"


def quote_to_proto(quote: Quote) -> wallet_pb2.Quote:
    return wallet_pb2.Quote(
        quote_id=str(quote.quote_id),
        from_account_id=str(quote.from_account_id),
        to_account_id=str(quote.to_account_id),
        from_amount=money_to_proto(quote.from_amount),
        to_amount=money_to_proto(quote.to_amount),
        rate=quote.rate,
        create_time=timestamp(quote.created_at),
        expire_time=timestamp(quote.expires_at),
    )


def exchange_rate_to_proto(rate: ExchangeRate) -> admin_pb2.ExchangeRate:
    return admin_pb2.ExchangeRate(
        from_currency_code=rate.from_currency,
        to_currency_code=rate.to_currency,
        rate=rate.rate,
        update_time=timestamp(rate.updated_at),
    )


def _rates_position(token: str) -> tuple[str, str] | None:
    position = decode_page_token(token, _RATES_SCOPE)
    if position is None:
        return None
    if (
        not isinstance(position, list)
        or len(position) != 2
        or not all(isinstance(code, str) for code in position)
    ):
        raise InvalidArgument.for_field(
            "page_token", "not a token from this listing (use next_page_token as given)"
        )
    return position[0], position[1]


class ExchangeWallet:
    _deps: Servicers

    async def GetQuote(
        self, request: wallet_pb2.GetQuoteRequest, context: Context
    ) -> wallet_pb2.GetQuoteResponse:
        parsed: dict[str, Any] = {"from_amount": None, "to_amount": None}
        side = request.WhichOneof("amount")

        def parse_fixed_side() -> None:
            if side == "from_amount":
                parsed["from_amount"] = parse_amount(
                    request.from_amount, "from_amount", present=True
                )
            elif side == "to_amount":
                parsed["to_amount"] = parse_amount(request.to_amount, "to_amount", present=True)
            else:
                raise InvalidArgument.for_field(
                    "from_amount", "from_amount or to_amount is required"
                )

        collect(
            lambda: parsed.setdefault(
                "from_account_id", parse_uuid(request.from_account_id, "from_account_id")
            ),
            lambda: parsed.setdefault(
                "to_account_id", parse_uuid(request.to_account_id, "to_account_id")
            ),
            parse_fixed_side,
        )
        quote = await services.get_quote(
            services.GetQuote(caller=user_caller(), **parsed), self._deps.uow()
        )
        return wallet_pb2.GetQuoteResponse(quote=quote_to_proto(quote))

    async def ExchangeCurrency(
        self, request: wallet_pb2.ExchangeCurrencyRequest, context: Context
    ) -> wallet_pb2.ExchangeCurrencyResponse:
        parsed: dict[str, Any] = {}
        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            lambda: parsed.setdefault("quote_id", parse_uuid(request.quote_id, "quote_id")),
        )
        tx = await services.exchange_currency(
            services.ExchangeCurrency(caller=user_caller(), **parsed), self._deps.uow()
        )
        return wallet_pb2.ExchangeCurrencyResponse(transaction=transaction_to_proto(tx))


class ExchangeAdmin:
    _deps: Servicers

    async def SetExchangeRate(
        self, request: admin_pb2.SetExchangeRateRequest, context: Context
    ) -> admin_pb2.SetExchangeRateResponse:
        parsed: dict[str, Any] = {}

        def parse_pair() -> None:
            problems: list[InvalidArgument] = []
            for key, value, field in (
                ("from_currency", request.from_currency_code, "from_currency_code"),
                ("to_currency", request.to_currency_code, "to_currency_code"),
            ):
                try:
                    parsed[key] = parse_currency(value, field=field)
                except InvalidArgument as exc:
                    problems.append(exc)
            if problems:
                raise InvalidArgument(
                    "; ".join(p.message for p in problems),
                    violations=tuple(v for p in problems for v in p.violations),
                )
            if parsed["from_currency"] == parsed["to_currency"]:
                raise InvalidArgument.for_field(
                    "to_currency_code", "must differ from from_currency_code"
                )

        collect(
            lambda: parsed.setdefault("request_id", parse_request_id(request.request_id)),
            parse_pair,
            lambda: parsed.setdefault("rate", parse_rate(request.rate, field="rate")),
        )
        rate = await services.set_exchange_rate(
            services.SetExchangeRate(caller=operator_caller(), **parsed), self._deps.uow()
        )
        return admin_pb2.SetExchangeRateResponse(exchange_rate=exchange_rate_to_proto(rate))

    async def ListExchangeRates(
        self, request: admin_pb2.ListExchangeRatesRequest, context: Context
    ) -> admin_pb2.ListExchangeRatesResponse:
        page_size = parse_page_size(request.page_size)
        after = _rates_position(request.page_token)
        page = await services.list_exchange_rates(
            services.ListExchangeRates(caller=operator_caller(), page_size=page_size, after=after),
            self._deps.uow(),
        )
        token = ""
        if page.next_after is not None:
            token = encode_page_token(_RATES_SCOPE, list(page.next_after))
        return admin_pb2.ListExchangeRatesResponse(
            exchange_rates=[exchange_rate_to_proto(r) for r in page.rates], next_page_token=token
        )
