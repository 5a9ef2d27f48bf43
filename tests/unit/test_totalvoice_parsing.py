"""The provider client's parsers on every JSON example of the seed and the provider notes, and on
hostile bodies: values come out exact, and nothing but the client's own errors escapes."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.adapters.totalvoice import parse_conference, parse_seconds, unwrap
from service.ports import (
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
)

SEED_CONFERENCE_OBJECT = b"""{
    "id": 432, "data_criacao": "2016-03-27T15:12:44+03:00", "data_termino": "2016-03-27T15:12:49+03:00",
    "chamadas": [{"id": 46132, "conferencia_id": 432, "url_gravacao": "http://fooooo.bar/gravacao.mp3",
        "numero": "4832830151", "data_criacao": "2016-03-27T15:12:44+03:00", "cli": 3132,
        "duracao": "00:00:45", "duracao_cobrada": "00:00:60", "duracao_falada": "00:00:35",
        "status": "atendida", "preco": 0.12, "data_inicio": "2016-03-27T15:13:11+01:00"}]}"""

SEED_GET_RESPONSE = b"""{"status": 200, "sucesso": true, "motivo": 0, "mensagem": "dados retornados com sucesso",
    "dados": {"id": 432, "numero_destino": "4832830151", "data_criacao": "2016-03-27T15:12:44+03:00",
        "data_inicio": "2016-03-27T15:12:49+03:00", "tipo": "fixo", "status": "atendida",
        "duracao_segundos": 45, "duracao": "00:00:45", "duracao_cobrada_segundos": 60,
        "duracao_cobrada": "00:00:60", "duracao_falada_segundos": 35, "duracao_falada": "00:00:35",
        "preco": 0.12, "url_conferencia": "http://fooooo.bar/conferencia.mp3",
        "resposta_usuario": true, "resposta": "8"}}"""


def test_seed_conference_object_parses_with_exact_values() -> None:
    report = parse_conference(json.loads(SEED_CONFERENCE_OBJECT, parse_float=Decimal))

    assert report.provider_conference_id == "432"
    assert report.ended_at == datetime(2016, 3, 27, 12, 12, 49, tzinfo=UTC)
    [call] = report.calls
    assert (call.call_id, call.number, call.status) == ("46132", "+554832830151", "atendida")
    assert (call.duration_seconds, call.billed_seconds, call.talk_seconds) == (45, 60, 35)
    assert call.price == Decimal("0.12")
    assert call.started_at == datetime(2016, 3, 27, 14, 13, 11, tzinfo=UTC)
    assert call.is_settled


def test_seed_get_example_in_the_audio_shape_reads_as_one_call() -> None:
    report = parse_conference(unwrap(200, SEED_GET_RESPONSE))

    [call] = report.calls
    assert (call.number, call.billed_seconds, call.price) == ("+554832830151", 60, Decimal("0.12"))
    assert report.is_open


def test_report_entry_with_null_billing_is_a_settled_unbilled_call() -> None:
    entry = {
        "id": "432",
        "numero_destino": "4832830151",
        "status": "ocupado",
        "duracao_segundos": 10,
        "duracao_cobrada_segundos": None,
        "duracao_cobrada": None,
        "preco": 0,
    }
    [call] = parse_conference(entry).calls
    assert call.is_settled and call.billed_price == Decimal("0") and call.billed_seconds is None


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
    assert report.created_at == datetime(
        2019, 9, 6, 18, 48, 5, tzinfo=timezone(timedelta(hours=-3))
    )
    [call] = report.calls
    assert (call.call_id, call.status, call.price, call.billed_seconds) == (
        "37823279",
        "atendida",
        Decimal("0.350"),
        60,
    )


@pytest.mark.parametrize(
    ("seconds", "hms", "expected"),
    [
        (None, "00:00:60", 60),
        (None, "01:02:03", 3723),
        (45, "00:00:99", 45),
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
    ("status", "body", "error", "reason"),
    [
        (
            403,
            b'{"status":403,"sucesso":false,"motivo":40,"mensagem":"access token inv\xc3\xa1lido","dados":null}',
            ProviderRejected,
            40,
        ),
        (
            402,
            b'{"status":402,"sucesso":false,"motivo":9,"mensagem":"saldo insuficiente"}',
            ProviderRejected,
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
            ProviderNotFound,
            80,
        ),
        (
            405,
            b'{"status":405,"sucesso":false,"motivo":11,"mensagem":"numero inv\xc3\xa1lido"}',
            ProviderRejected,
            11,
        ),
        (
            409,
            b'{"status":409,"sucesso":false,"motivo":20,"mensagem":"duplicado"}',
            ProviderRejected,
            20,
        ),
        (
            429,
            b'{"status":429,"sucesso":false,"motivo":0,"mensagem":"limite"}',
            ProviderUnavailable,
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
            ProviderRejected,
            30,
        ),
        (502, b"<html><body>Bad Gateway</body></html>", ProviderUnavailable, None),
        (200, b'{"status":200,"sucesso":false,"motivo":10}', ProviderError, 10),
    ],
)
def test_envelope_errors_are_typed(
    status: int, body: bytes, error: type[ProviderError], reason: int | None
) -> None:
    with pytest.raises(error) as raised:
        unwrap(status, body)
    assert raised.value.status == status
    assert raised.value.reason == reason


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
