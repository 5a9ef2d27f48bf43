"""The provider client's parsers on every JSON example of the seed and the provider notes, and on
hostile bodies: values come out exact, and nothing but the client's own errors escapes. The seed's
envelopes are also served to the client itself, by a raw HTTP/1.1 server on loopback that also
misbehaves on demand (closes, stalls, garbles)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.adapters.totalvoice import (
    TotalVoiceClient,
    parse_call,
    parse_conference,
    parse_number,
    parse_price,
    parse_seconds,
    parse_status,
    parse_time,
    query_time,
    unwrap,
)
from service.domain.provider_ids import parse_id
from service.ports import (
    DialOutcomeUnknown,
    ProviderAuthFailed,
    ProviderDuplicate,
    ProviderError,
    ProviderInvalidParameter,
    ProviderNoBalance,
    ProviderNotActive,
    ProviderNotFound,
    ProviderNotImplemented,
    ProviderNotPermitted,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)

BRASILIA = timezone(timedelta(hours=-3))

SEED_CALL_OBJECT = b"""{
    "id": 46132, "conferencia_id": 432, "url_gravacao": "http://fooooo.bar/gravacao.mp3",
    "numero": "4832830151", "data_criacao": "2016-03-27T15:12:44+03:00", "cli": 3132,
    "duracao": "00:00:45", "duracao_cobrada": "00:00:60", "duracao_falada": "00:00:35",
    "status": "atendida", "preco": 0.12, "data_inicio": "2016-03-27T15:13:11+01:00"}"""

SEED_CONFERENCE_OBJECT = (
    b"""{
    "id": 432, "data_criacao": "2016-03-27T15:12:44+03:00", "data_termino": "2016-03-27T15:12:49+03:00",
    "chamadas": [%s]}"""
    % SEED_CALL_OBJECT
)

SEED_CREATE_RESPONSE = b"""{"status": 200, "sucesso": true, "motivo": 0,
    "mensagem": "conferencia criado com sucesso", "dados": {"id": 4921}}"""

SEED_GET_RESPONSE = b"""{"status": 200, "sucesso": true, "motivo": 0, "mensagem": "dados retornados com sucesso",
    "dados": {"id": 432, "numero_destino": "4832830151", "data_criacao": "2016-03-27T15:12:44+03:00",
        "data_inicio": "2016-03-27T15:12:49+03:00", "tipo": "fixo", "status": "atendida",
        "duracao_segundos": 45, "duracao": "00:00:45", "duracao_cobrada_segundos": 60,
        "duracao_cobrada": "00:00:60", "duracao_falada_segundos": 35, "duracao_falada": "00:00:35",
        "preco": 0.12, "url_conferencia": "http://fooooo.bar/conferencia.mp3",
        "resposta_usuario": true, "resposta": "8"}}"""

SEED_REPORT_RESPONSE = b"""{"status": 200, "sucesso": true, "motivo": 0, "mensagem": "dados retornados com sucesso",
  "dados": {"relatorio": [
      {"id": 432, "numero_destino": "4832830151", "data_criacao": "2016-03-27T15:12:44+03:00",
        "data_inicio": "2016-03-27T15:12:49+03:00", "tipo": "fixo", "status": "atendida",
        "duracao_segundos": 45, "duracao": "00:00:45", "duracao_cobrada_segundos": 60,
        "duracao_cobrada": "00:00:60", "duracao_falada_segundos": 35, "duracao_falada": "00:00:35",
        "preco": 0.12, "url_conferencia": "http://fooooo.bar/conferencia.mp3",
        "resposta_usuario": true, "resposta": "8"},
      {"id": 432, "numero_destino": "4832830151", "data_criacao": "2016-03-27T15:12:44+03:00",
        "data_inicio": "2016-03-27T15:12:49+03:00", "tipo": "fixo", "status": "ocupado",
        "duracao_segundos": 10, "duracao": "00:00:10", "duracao_cobrada_segundos": null,
        "duracao_cobrada": null, "duracao_falada_segundos": null, "duracao_falada": null,
        "preco": 0, "url_conferencia": "http://fooooo.bar/conferencia.mp3",
        "resposta_usuario": true, "resposta": null}]}}"""

# The provider notes (shared/provider/totalvoice-api.md), sections 1.4a, 2.1, 2.5 and 5.4.
NOTES_CONFERENCE_OBJECT = b"""{"id":432,"data_criacao":"2016-03-27T15:12:44+03:00","data_termino":"2016-03-27T15:12:49+03:00",
 "chamadas":[{"id":46132,"conferencia_id":432,"url_gravacao":"http://x/gravacao.mp3","numero":"+5510999999999",
              "data_criacao":"2016-03-27T15:12:44+03:00","cli":3132,"duracao":"00:00:45","duracao_cobrada":"00:00:60",
              "duracao_falada":"00:00:35","status":"atendida","preco":0.12,"data_inicio":"2016-03-27T15:13:11+01:00"}]}"""
NOTES_SUCCESS = b'{"status":200,"sucesso":true,"motivo":0,"mensagem":"\xc3\xa1udio criado com sucesso","dados":{"id":4921}}'
NOTES_SUCCESS_WITHOUT_DADOS = (
    b'{"status":200,"sucesso":true,"motivo":0,"mensagem":"escuta criada com sucesso"}'
)
NOTES_INVALID_TOKEN = b'{"status":403,"sucesso":false,"motivo":40,"mensagem":"access token inv\xc3\xa1lido","dados":null}'
NOTES_CONFERENCE_EVENT = b"""{"data_criacao":"2019-09-06T18:48:05","evento_conferencia":"Entrou","numero":"+5510999999999",
   "gravar_audio":false,"conferencia_id":42874,"chamada_id":"37823279","cliente_id":2150}"""


def provider_json(body: bytes) -> Any:
    """As the client reads a body: floats as their decimal text."""
    return json.loads(body, parse_float=Decimal)


@dataclass(frozen=True)
class Seen:
    """A request as the server read it; header names in lower case."""

    method: str
    path: str
    params: dict[str, str]
    content: bytes
    headers: dict[str, str]


# The raw bytes to answer with; None closes the connection without a word.
Answer = Callable[[Seen], Awaitable[bytes | None]]
ClientFor = Callable[[Answer], Awaitable[TotalVoiceClient]]


def http_answer(status: int, body: bytes, *extra_headers: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", "Content-Type: application/json", *extra_headers]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def replying(body: bytes, seen: list[Seen] | None = None) -> Answer:
    async def answer(request: Seen) -> bytes | None:
        if seen is not None:
            seen.append(request)
        return http_answer(200, body)

    return answer


async def serve(answer: Answer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, value in (line.split(":", 1) for line in head[1:] if line)
            }
            content = await reader.readexactly(int(headers.get("content-length", "0")))
            url = urllib.parse.urlsplit(target)
            params = dict(urllib.parse.parse_qsl(url.query))
            reply = await answer(Seen(method, url.path, params, content, headers))
            if reply is None:
                return
            writer.write(reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFor]:
    """Clients whose provider is `answer`, served on loopback."""
    opened: list[tuple[TotalVoiceClient, asyncio.Server]] = []

    async def client_for(answer: Answer) -> TotalVoiceClient:
        server = await asyncio.start_server(lambda r, w: serve(answer, r, w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = TotalVoiceClient.create(f"http://127.0.0.1:{port}", "token", 1000, 1.0, 0.3)
        opened.append((client, server))
        return client

    yield client_for
    for client, server in opened:
        await client.aclose()
        server.close()


# --- the seed's examples -------------------------------------------------------------------


def test_seed_conference_object_parses_with_exact_values() -> None:
    report = parse_conference(provider_json(SEED_CONFERENCE_OBJECT))

    assert report.provider_conference_id == "432"
    assert report.created_at == datetime(2016, 3, 27, 12, 12, 44, tzinfo=UTC)
    assert report.ended_at == datetime(2016, 3, 27, 12, 12, 49, tzinfo=UTC)
    assert not report.is_open
    [call] = report.calls
    assert call == parse_call(provider_json(SEED_CALL_OBJECT))


def test_seed_call_object_parses_with_exact_values() -> None:
    call = parse_call(provider_json(SEED_CALL_OBJECT))

    assert (call.call_id, call.number, call.status) == ("46132", "+554832830151", "atendida")
    assert (call.duration_seconds, call.billed_seconds, call.talk_seconds) == (45, 60, 35)
    assert call.price == Decimal("0.12")
    assert call.started_at == datetime(2016, 3, 27, 14, 13, 11, tzinfo=UTC)
    assert call.recording_url == "http://fooooo.bar/gravacao.mp3"
    assert call.is_settled and call.billed_price == Decimal("0.12")


async def test_seed_create_answer_gives_the_conference_id_for_an_empty_body(
    client_for: ClientFor,
) -> None:
    seen: list[Seen] = []
    client = await client_for(replying(SEED_CREATE_RESPONSE, seen))

    assert await client.create_conference() == "4921"

    [request] = seen
    assert (request.method, request.path, json.loads(request.content)) == (
        "POST",
        "/conferencia",
        {},
    )
    assert request.headers["access-token"] == "token"


async def test_seed_get_example_in_the_audio_shape_reads_as_one_call(
    client_for: ClientFor,
) -> None:
    client = await client_for(replying(SEED_GET_RESPONSE))

    report = await client.get_conference("432")

    assert report == parse_conference(unwrap(200, SEED_GET_RESPONSE))
    assert (report.provider_conference_id, report.is_open) == ("432", True)
    assert report.created_at == datetime(2016, 3, 27, 12, 12, 44, tzinfo=UTC)
    [call] = report.calls
    assert (call.call_id, call.number, call.status) == (None, "+554832830151", "atendida")
    assert call.started_at == datetime(2016, 3, 27, 12, 12, 49, tzinfo=UTC)
    assert (call.duration_seconds, call.billed_seconds, call.talk_seconds) == (45, 60, 35)
    assert (call.price, call.recording_url) == (Decimal("0.12"), None)


async def test_seed_report_example_reads_both_entries_and_one_short_page(
    client_for: ClientFor,
) -> None:
    seen: list[Seen] = []
    client = await client_for(replying(SEED_REPORT_RESPONSE, seen))
    start = datetime(2018, 3, 14, tzinfo=BRASILIA)

    answered, busy = await client.conference_report(start, start + timedelta(days=1))

    [answered_call] = answered.calls
    assert (answered_call.status, answered_call.billed_seconds) == ("atendida", 60)
    assert (answered_call.price, answered_call.talk_seconds) == (Decimal("0.12"), 35)
    [busy_call] = busy.calls
    assert (busy_call.status, busy_call.duration_seconds) == ("ocupado", 10)
    assert (busy_call.billed_seconds, busy_call.talk_seconds) == (None, None)
    assert busy_call.price == Decimal("0")
    assert busy_call.is_settled and busy_call.billed_price == Decimal("0")
    [request] = seen
    assert request.params == {
        "data_inicio": "2018-03-14T03:00:00Z",
        "data_fim": "2018-03-15T03:00:00Z",
        "posicao": "0",
        "limite": "200",
    }


async def test_calls_report_reads_the_call_objects(client_for: ClientFor) -> None:
    body = b'{"status":200,"sucesso":true,"motivo":0,"mensagem":"ok","dados":{"relatorio":[%s]}}'
    client = await client_for(replying(body % SEED_CALL_OBJECT))
    start = datetime(2016, 3, 27, tzinfo=UTC)

    assert await client.calls_report(start, start + timedelta(days=1)) == [
        parse_call(provider_json(SEED_CALL_OBJECT))
    ]


# --- the provider notes' examples ----------------------------------------------------------


def test_notes_conference_object_keeps_an_e164_number() -> None:
    [call] = parse_conference(provider_json(NOTES_CONFERENCE_OBJECT)).calls

    # +55 10 is no Brazilian area code, so the number is kept as the provider wrote it.
    assert (call.number, call.billed_seconds, call.price) == ("+5510999999999", 60, Decimal("0.12"))


def test_notes_envelopes_give_their_data_even_when_it_is_missing() -> None:
    assert unwrap(200, NOTES_SUCCESS) == {"id": 4921}
    assert unwrap(200, NOTES_SUCCESS_WITHOUT_DADOS) is None
    with pytest.raises(ProviderAuthFailed):
        unwrap(403, NOTES_INVALID_TOKEN)


@pytest.mark.parametrize("body", [NOTES_SUCCESS_WITHOUT_DADOS, b'{"sucesso":true,"dados":null}'])
async def test_ending_needs_no_data_in_the_answer(client_for: ClientFor, body: bytes) -> None:
    seen: list[Seen] = []
    client = await client_for(replying(body, seen))

    await client.end_conference("4921")

    assert [(request.method, request.path) for request in seen] == [("DELETE", "/conferencia/4921")]


def test_notes_conference_event_reads_with_the_webhook_parsers() -> None:
    event = provider_json(NOTES_CONFERENCE_EVENT)

    assert parse_id(event["conferencia_id"]) == "42874"
    assert parse_id(event["chamada_id"]) == "37823279"
    assert parse_time(event["data_criacao"]) == datetime(2019, 9, 6, 18, 48, 5, tzinfo=BRASILIA)
    assert parse_number(event["numero"]) == "+5510999999999"


def test_notes_call_end_leg_reads_as_a_billed_call() -> None:
    # `chamada_fim`'s `destino` leg with the values the notes give (section 5.4).
    leg = provider_json(
        b"""{"data_inicio":"2019-09-06T13:34:57.000-03:00","numero":"48999999999","tipo":"movel",
        "status":"atendida","duracao_segundos":null,"duracao":"00:00:24","duracao_cobrada_segundos":null,
        "duracao_cobrada":"00:01:00","duracao_falada_segundos":null,"duracao_falada":"00:00:24",
        "preco":0.35,"motivo_desconexao":"16. normal"}"""
    )

    call = parse_call(leg)

    assert (call.number, call.status, call.price) == ("+5548999999999", "atendida", Decimal("0.35"))
    assert (call.duration_seconds, call.billed_seconds, call.talk_seconds) == (24, 60, 24)
    assert call.started_at == datetime(2019, 9, 6, 16, 34, 57, tzinfo=UTC)


def test_webhook_style_values_parse() -> None:
    report = parse_conference(
        {
            "id": "42874",
            "data_criacao": "2019-09-06T18:48:05",
            "chamadas": [
                {
                    "id": "37823279",
                    "numero": "+5510999999999",
                    "status": "Atendida",
                    "data_inicio": "2019-09-06T13:34:57.000-03:00",
                    "preco": "0.350",
                    "duracao_cobrada": "00:01:00",
                }
            ],
        }
    )
    assert report.created_at == datetime(2019, 9, 6, 18, 48, 5, tzinfo=BRASILIA)
    [call] = report.calls
    assert (call.call_id, call.status, call.price, call.billed_seconds) == (
        "37823279",
        "atendida",
        Decimal("0.350"),
        60,
    )


# --- one value at a time -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "hms", "expected"),
    [
        (None, "00:00:60", 60),
        (None, "00:01:00", 60),
        (None, "00:00:24", 24),
        (None, "01:02:03", 3723),
        (45, "00:00:99", 45),
        (Decimal("60"), None, 60),
        ("12", None, 12),
        (None, None, None),
        (None, "garbage", None),
        (True, None, None),
        (-1, None, None),
    ],
)
def test_durations(seconds: object, hms: object, expected: int | None) -> None:
    assert parse_seconds(seconds, hms) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"0.12", Decimal("0.12")),  # a float in the call objects
        (b"0.35", Decimal("0.35")),
        (b"0", Decimal("0")),  # an unanswered call
        (b"null", None),  # mid-call
        (b"100.00", Decimal("100.00")),  # GET /saldo
        (b'"0.060"', Decimal("0.060")),  # the account's tariffs are strings
        (b'"56.8616"', Decimal("56.8616")),  # the low-balance webhook
        (b'"0,35"', Decimal("0.35")),
        (b"-1", None),
        (b'"NaN"', None),
        (b'"abc"', None),
        (b"true", None),
    ],
)
def test_prices_are_exact_decimals_from_their_text(text: bytes, expected: Decimal | None) -> None:
    price = parse_price(provider_json(text))

    assert price == expected
    if expected is not None:
        assert str(price) == str(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4921, "4921"),
        ("37823279", "37823279"),
        (" 42 ", "42"),
        (Decimal("432"), "432"),
        (Decimal("1.5"), None),
        ("abc", None),
        (True, None),
        (None, None),
    ],
)
def test_ids_are_numbers_or_numeric_strings(value: object, expected: str | None) -> None:
    assert parse_id(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4832830151", "+554832830151"),
        ("48999999999", "+5548999999999"),
        ("11912341234", "+5511912341234"),
        ("+5548999999999", "+5548999999999"),
        (4832830151, "+554832830151"),  # the docs' table types `numero` as an integer
        ("+5510999999999", "+5510999999999"),
        ("4000", "4000"),  # an extension (ramal)
        ("", None),
        (None, None),
    ],
)
def test_numbers_come_out_in_e164(value: object, expected: str | None) -> None:
    assert parse_number(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2016-03-27T15:12:44+03:00", datetime(2016, 3, 27, 12, 12, 44, tzinfo=UTC)),
        ("2018-08-02T10:49:30-03:00", datetime(2018, 8, 2, 13, 49, 30, tzinfo=UTC)),
        ("2019-05-22T09:18:44.000-03:00", datetime(2019, 5, 22, 12, 18, 44, tzinfo=UTC)),
        ("2019-05-22T09:18:44.250-03:00", datetime(2019, 5, 22, 12, 18, 44, 250000, tzinfo=UTC)),
        ("2019-09-06T17:21:33", datetime(2019, 9, 6, 20, 21, 33, tzinfo=UTC)),  # Brasília
        ("2021-04-08T17:21:20Z", datetime(2021, 4, 8, 17, 21, 20, tzinfo=UTC)),
        ("2018-03-14", datetime(2018, 3, 14, 3, tzinfo=UTC)),
        ("", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_times_with_and_without_offsets(value: object, expected: datetime | None) -> None:
    parsed = parse_time(value)

    assert parsed == expected
    assert parsed is None or parsed.tzinfo is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Atendida", "atendida"),
        (" sem resposta ", "sem resposta"),
        ("não existe", "não existe"),
        ("", None),
        (None, None),
        (3, None),
    ],
)
def test_statuses_are_lowercase_words(value: object, expected: str | None) -> None:
    assert parse_status(value) == expected


def test_report_bounds_are_whole_utc_seconds_covering_the_period() -> None:
    moment = datetime(2018, 3, 14, 0, 0, 0, 250000, tzinfo=BRASILIA)

    assert query_time(moment) == "2018-03-14T03:00:00Z"
    assert query_time(moment, round_up=True) == "2018-03-14T03:00:01Z"
    with pytest.raises(ValueError):
        query_time(datetime(2018, 3, 14))


# --- errors --------------------------------------------------------------------------------

GATEWAY_PAGE = b"<html><body><center><h1>502 Bad Gateway</h1></center></body></html>"


@pytest.mark.parametrize(
    ("status", "body", "error", "reason"),
    [
        (403, NOTES_INVALID_TOKEN, ProviderAuthFailed, 40),
        (
            403,
            b'{"status":403,"sucesso":false,"motivo":8,"mensagem":"conta desativada"}',
            ProviderNotPermitted,
            8,
        ),
        (
            409,
            b'{"status":409,"sucesso":false,"motivo":8,"mensagem":"sem permiss\xc3\xa3o"}',
            ProviderNotPermitted,
            8,
        ),
        (
            402,
            b'{"status":402,"sucesso":false,"motivo":9,"mensagem":"saldo insuficiente"}',
            ProviderNoBalance,
            9,
        ),
        (
            404,
            b'{"status":404,"sucesso":false,"motivo":60,"mensagem":"conferencia n\xc3\xa3o encontrada"}',
            ProviderNotFound,
            60,
        ),
        (
            404,
            b'{"status":404,"sucesso":false,"motivo":80,"mensagem":"a conferencia n\xc3\xa3o est\xc3\xa1 ativa"}',
            ProviderNotActive,
            80,
        ),
        (
            404,
            b'{"status":404,"sucesso":false,"motivo":10,"mensagem":"qual conferencia? informar ID"}',
            ProviderInvalidParameter,
            10,
        ),
        (
            404,
            b'{"status":404,"sucesso":false,"motivo":90,"mensagem":"rota n\xc3\xa3o encontrada"}',
            ProviderRejected,
            90,
        ),
        (
            405,
            b'{"status":405,"sucesso":false,"motivo":10,"mensagem":"o parametro numero \xc3\xa9 obrigat\xc3\xb3rio"}',
            ProviderInvalidParameter,
            10,
        ),
        (
            405,
            b'{"status":405,"sucesso":false,"motivo":11,"mensagem":"numero inv\xc3\xa1lido"}',
            ProviderInvalidParameter,
            11,
        ),
        (
            400,
            b'{"status":400,"sucesso":false,"motivo":100,"mensagem":"JSON mal formado"}',
            ProviderInvalidParameter,
            100,
        ),
        (
            409,
            b'{"status":409,"sucesso":false,"motivo":20,"mensagem":"login duplicado"}',
            ProviderDuplicate,
            20,
        ),
        (
            429,
            b'{"status":429,"sucesso":false,"motivo":0,"mensagem":"limite"}',
            ProviderRateLimited,
            0,
        ),
        (
            500,
            b'{"status":500,"sucesso":false,"motivo":50,"mensagem":"erro"}',
            ProviderUnavailable,
            50,
        ),
        (
            501,
            b'{"status":501,"sucesso":false,"motivo":30,"mensagem":"n\xc3\xa3o implementado"}',
            ProviderNotImplemented,
            30,
        ),
        (200, b'{"status":200,"sucesso":false,"motivo":10}', ProviderError, 10),
        (200, GATEWAY_PAGE, ProviderError, None),
    ],
)
def test_envelope_errors_are_typed(
    status: int, body: bytes, error: type[ProviderError], reason: int | None
) -> None:
    with pytest.raises(ProviderError) as raised:
        unwrap(status, body)
    assert type(raised.value) is error
    assert (raised.value.status, raised.value.reason) == (status, reason)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, ProviderInvalidParameter),
        (402, ProviderNoBalance),
        (403, ProviderAuthFailed),
        (404, ProviderNotFound),
        (405, ProviderInvalidParameter),
        (409, ProviderDuplicate),
        (418, ProviderRejected),
        (429, ProviderRateLimited),
        (500, ProviderUnavailable),
        (501, ProviderNotImplemented),
        (502, ProviderUnavailable),
        (503, ProviderUnavailable),
        (504, ProviderUnavailable),
    ],
)
@pytest.mark.parametrize("body", [GATEWAY_PAGE, b"", b"null", b'["not", "an", "envelope"]'])
def test_answers_without_an_envelope_are_typed_by_status(
    status: int, error: type[ProviderError], body: bytes
) -> None:
    with pytest.raises(ProviderError) as raised:
        unwrap(status, body)
    assert type(raised.value) is error
    assert (raised.value.status, raised.value.reason) == (status, None)


def test_specific_errors_keep_the_meaning_of_their_base() -> None:
    repeatable: list[type[ProviderError]] = [ProviderRateLimited]
    final: list[type[ProviderError]] = [
        ProviderAuthFailed,
        ProviderNotPermitted,
        ProviderNoBalance,
        ProviderInvalidParameter,
        ProviderDuplicate,
        ProviderNotImplemented,
        ProviderNotActive,
    ]
    assert all(issubclass(error, ProviderUnavailable) for error in repeatable)
    assert all(issubclass(error, ProviderRejected) for error in final)
    assert issubclass(ProviderNotActive, ProviderNotFound)
    assert not any(issubclass(error, DialOutcomeUnknown) for error in repeatable + final)


@pytest.mark.parametrize(
    "body",
    [
        b'{"status":200,"sucesso":false,"motivo":50,"mensagem":"erro"}',
        b"<html>OK</html>",
    ],
    ids=["not-a-success", "not-json"],
)
async def test_a_dial_answered_but_not_understood_is_an_unknown_outcome(
    client_for: ClientFor, body: bytes
) -> None:
    seen: list[Seen] = []
    client = await client_for(replying(body, seen))

    with pytest.raises(DialOutcomeUnknown):
        await client.add_participant("4921", "4832830151", None, False)

    assert len(seen) == 1


async def test_a_dial_answered_success_without_a_call_id_is_placed(client_for: ClientFor) -> None:
    """Some answers carry no id in `dados`: the call was placed, and the poller matches it by
    its number."""
    seen: list[Seen] = []
    body = b'{"status":200,"sucesso":true,"motivo":0,"mensagem":"chamada criada com sucesso"}'
    client = await client_for(replying(body, seen))

    assert await client.add_participant("4921", "4832830151", None, False) is None
    assert len(seen) == 1


async def stalling(request: Seen) -> bytes | None:
    await asyncio.sleep(2)  # longer than the client's 0.3 s read timeout
    return http_answer(200, NOTES_SUCCESS)


async def hanging_up(request: Seen) -> bytes | None:
    return None


async def bad_gzip(request: Seen) -> bytes | None:
    return http_answer(200, b"not gzip at all", "Content-Encoding: gzip")


async def not_http(request: Seen) -> bytes | None:
    return b"SMTP ready\r\n\r\n"


@pytest.mark.parametrize(
    "answer", [stalling, hanging_up, bad_gzip, not_http], ids=lambda a: a.__name__
)
async def test_a_dial_sent_but_not_answered_is_an_unknown_outcome(
    client_for: ClientFor, answer: Answer
) -> None:
    client = await client_for(answer)

    with pytest.raises(ProviderError) as raised:
        await client.add_participant("4921", "4832830151", None, False)

    assert type(raised.value) is DialOutcomeUnknown


async def test_a_dial_that_could_not_connect_was_not_sent() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unused:
        unused.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{unused.getsockname()[1]}"
    client = TotalVoiceClient.create(nobody, "token", 1000)
    try:
        with pytest.raises(ProviderError) as raised:
            await client.add_participant("4921", "4832830151", None, False)
    finally:
        await client.aclose()

    assert type(raised.value) is ProviderUnavailable


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=8,
)
provider_keys = st.sampled_from(
    [
        "id",
        "data_criacao",
        "data_termino",
        "chamadas",
        "numero",
        "numero_destino",
        "status",
        "duracao",
        "duracao_segundos",
        "duracao_cobrada",
        "duracao_cobrada_segundos",
        "preco",
        "data_inicio",
        "url_gravacao",
        "duracao_falada",
    ]
)
hostile_objects = st.dictionaries(provider_keys, json_values, max_size=6)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(hostile_objects | st.dictionaries(provider_keys, st.lists(hostile_objects, max_size=2)))
def test_hostile_conference_bodies_never_crash_the_parser(body: dict[str, object]) -> None:
    report = parse_conference(body)
    for call in report.calls:
        assert call.price is None or call.price >= 0


@given(
    st.integers(min_value=100, max_value=599),
    st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_any_answer_is_data_or_a_provider_error(status: int, body: bytes) -> None:
    with contextlib.suppress(ProviderError):
        unwrap(status, body)
