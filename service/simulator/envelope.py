"""The provider's answers: its JSON envelope, and a gateway's HTML on 502, 503 and 504."""

from typing import Any

import orjson
from starlette.responses import Response

JSON_MEDIA_TYPE = "application/json; charset=utf-8"

_GATEWAY_REASONS = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


class ProviderError(Exception):
    """A refusal in the provider's envelope: `sucesso` false, a `motivo` and a message."""

    def __init__(self, status: int, motivo: int, mensagem: str) -> None:
        super().__init__(f"{status} motivo {motivo}: {mensagem}")
        self.status = status
        self.motivo = motivo
        self.mensagem = mensagem


def enveloped(status: int, motivo: int, mensagem: str, dados: Any = None) -> Response:
    body = {
        "status": status,
        "sucesso": status == 200,
        "motivo": motivo,
        "mensagem": mensagem,
        "dados": dados,
    }
    return Response(orjson.dumps(body), status_code=status, media_type=JSON_MEDIA_TYPE)


def success(mensagem: str, dados: Any = None) -> Response:
    return enveloped(200, 0, mensagem, dados)


def refusal(error: ProviderError) -> Response:
    return enveloped(error.status, error.motivo, error.mensagem)


def gateway_page(status: int) -> Response:
    """What a load balancer in front of the API answers: HTML, not the envelope."""
    title = f"{status} {_GATEWAY_REASONS.get(status, 'Error')}"
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return Response(page, status_code=status, media_type="text/html")
