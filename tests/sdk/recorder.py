"""Records the HTTP responses an SDK call receives, through azure-core's `raw_response_hook`."""

from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Exchange:
    method: str
    path: str
    query: str
    status: int
    headers: dict


@dataclass
class Recorder:
    """Pass as `raw_response_hook=`: the SDK calls it for the first request of a call and for
    every poll and page request that follows."""

    exchanges: list = field(default_factory=list)

    def __call__(self, pipeline_response):
        response = pipeline_response.http_response
        url = urlsplit(response.request.url)
        headers = {name.lower(): value for name, value in response.headers.items()}
        self.exchanges.append(
            Exchange(response.request.method, url.path, url.query, response.status_code, headers)
        )

    def first(self) -> Exchange:
        assert self.exchanges, "the SDK sent no request"
        return self.exchanges[0]

    def paths_containing(self, text: str) -> list:
        return [exchange for exchange in self.exchanges if text in exchange.path]
