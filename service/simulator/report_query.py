"""Report queries: the lenient date formats the SDKs send, and `posicao`/`limite` paging."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from service.simulator.clock import SAO_PAULO
from service.simulator.envelope import ProviderError

DEFAULT_LIMIT = 100
MAX_LIMIT = 200

_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# PHP and Ruby send "2018-03-14 00:00:00 UTC"; unencoded, its spaces arrive as "+".
_WORDED_UTC = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[ T]([0-9]{2}:[0-9]{2}(?::[0-9]{2})?) ?UTC")
# An unencoded "+03:00" offset arrives as " 03:00" once the query string is decoded.
_DECODED_PLUS_OFFSET = re.compile(
    r"(.+T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?) ([0-9]{2}:?[0-9]{2})"
)
_DIGITS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class ReportQuery:
    start: datetime
    end: datetime
    offset: int
    limit: int

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end


def parse_report_query(params: Mapping[str, str]) -> ReportQuery:
    return ReportQuery(
        start=_required_instant(params, "data_inicio", end_of_day=False),
        end=_required_instant(params, "data_fim", end_of_day=True),
        offset=_count(params, "posicao", default=0, maximum=None),
        limit=_count(params, "limite", default=DEFAULT_LIMIT, maximum=MAX_LIMIT),
    )


def parse_instant(raw: str, *, end_of_day: bool) -> datetime | None:
    """A date alone means Sao Paulo's whole day; a time without an offset is Sao Paulo's too."""
    text = raw.strip()
    if _DATE_ONLY.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return None
        return datetime.combine(day, time.max if end_of_day else time.min, SAO_PAULO)
    worded = _WORDED_UTC.fullmatch(text.replace("+", " "))
    if worded:
        text = f"{worded[1]}T{worded[2]}+00:00"
    elif plus_offset := _DECODED_PLUS_OFFSET.fullmatch(text):
        text = f"{plus_offset[1]}+{plus_offset[2]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=SAO_PAULO)


def _required_instant(params: Mapping[str, str], name: str, *, end_of_day: bool) -> datetime:
    raw = params.get(name, "")
    if not raw.strip():
        raise ProviderError(405, 10, f"o parametro {name} é obrigatório")
    moment = parse_instant(raw, end_of_day=end_of_day)
    if moment is None:
        raise ProviderError(405, 11, f"o parametro {name} é inválido")
    return moment.astimezone(UTC)


def _count(params: Mapping[str, str], name: str, *, default: int, maximum: int | None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw.strip()):
        raise ProviderError(405, 11, f"o parametro {name} é inválido")
    value = int(raw)
    if maximum is not None and not 1 <= value <= maximum:
        raise ProviderError(405, 11, f"o parametro {name} é inválido, informe de 1 a {maximum}")
    return value
