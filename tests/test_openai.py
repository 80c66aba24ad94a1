"""The OpenAI SDK (3.x, which runs on httpx2) with the httpx2 ExClient as its http_client.

``AsyncOpenAI(base_url=..., http_client=ExClient(auth=NTLMAuth(...)))`` against a small
OpenAI-compatible chat endpoint on loopback that authenticates connections the way IIS does
(``IISLikeServer``, a real pyspnego acceptor per connection), and behind the NTLM proxy of
``httpx_extensions.testing`` (``AuthProxy``): a completion, streamed and not, concurrently.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

openai = pytest.importorskip("openai", minversion="3")

from httpx_extensions.httpx2 import ExClient, NTLMAuth  # noqa: E402
from httpx_extensions.testing import AuthProxy, IISLikeServer, write_user_file  # noqa: E402
from httpx_extensions.testing._iis import _Exchange  # noqa: E402

pytestmark = pytest.mark.anyio

ALICE = ("EXAMPLE\\alice", "Passw0rd")
MODEL = "loopback-1"
# The SDK sends `Authorization: Bearer <api_key>` on every request. An IIS site with Windows
# auth answers that with a 401 and forgets the connection's logon, so each call would redo
# the handshake (3 round trips). Omitting the header per call keeps the connection's logon.
NO_BEARER = {"Authorization": openai.omit}


def _completion(text: str, user: str) -> dict[str, object]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"{text} (for {user})"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def _chunks(text: str, user: str) -> bytes:
    events = []
    for index, word in enumerate([*text.split(), f"(for {user})"]):
        delta = {"content": (" " if index else "") + word}
        if index == 0:
            delta["role"] = "assistant"
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        events.append(f"data: {json.dumps(chunk)}\n\n")
    events.append("data: [DONE]\n\n")
    return "".join(events).encode()


# openai's stream leaves its chain of async generators (its SSE decoder, its event iterator,
# httpx2's Response.aiter_bytes under them) for the GC after `data: [DONE]`, whatever the HTTP
# client; trio reports each as a ResourceWarning. Those, and only those, are let through.
_SDK_GENERATORS_LEFT_OPEN = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai\._streaming|httpx2\._models)\.:ResourceWarning",
    r"ignore:Exception ignored in. <async_generator object "
    r"(SSEDecoder\.aiter_bytes|AsyncStream\._iter_events|Response\.aiter_bytes) "
    r":pytest.PytestUnraisableExceptionWarning",
)


class _ChatExchange(_Exchange):
    """IISLikeServer's auth state machine; once authenticated, an OpenAI chat endpoint that
    echoes the last user message, as JSON or as server-sent events (``stream: true``)."""

    async def ok(
        self,
        user: str,
        scheme: str | None,
        *,
        handshake: bool,
        final_token: bytes | None = None,
    ) -> None:
        headers = []
        if final_token:
            value = f"{scheme} {base64.b64encode(final_token).decode()}"
            headers.append((b"WWW-Authenticate", value.encode()))
        if self.path != "/v1/chat/completions" or self.method != "POST":
            body = json.dumps({"error": {"message": f"no route {self.method} {self.path}"}})
            await self.reply(
                404, body.encode(), b"application/json", headers, user=user, handshake=handshake
            )
            return
        request = json.loads(self.body)
        text = request["messages"][-1]["content"]
        if request.get("stream"):
            body, content_type = _chunks(text, user), b"text/event-stream"
        else:
            body, content_type = json.dumps(_completion(text, user)).encode(), b"application/json"
        await self.reply(200, body, content_type, headers, user=user, handshake=handshake)


class ChatServer(IISLikeServer):
    _exchange_type = _ChatExchange


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    return write_user_file(tmp_path / "users.txt", [("EXAMPLE", "alice", "Passw0rd")])


@pytest.fixture
def chat(user_file: Path) -> Iterator[ChatServer]:
    with ChatServer(user_file=user_file, schemes=("NTLM",)) as server:
        yield server


async def test_openai_chat_completion_behind_ntlm(chat: ChatServer) -> None:
    async with ExClient(auth=NTLMAuth(*ALICE)) as http_client:
        client = openai.AsyncOpenAI(
            base_url=chat.url + "/v1", api_key="unused", http_client=http_client, max_retries=0
        )
        for text in ("hello there", "and again"):
            completion = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}], extra_headers=NO_BEARER
            )
            assert completion.choices[0].message.content == f"{text} (for EXAMPLE\\alice)"
    # One handshake on one connection; the second call rode the authenticated connection.
    assert chat.handshakes_completed == 1
    assert chat.connections_opened == 1
    assert [r.status for r in chat.log] == [401, 401, 200, 200]


async def test_openai_with_its_bearer_header_each_call_logs_on_again(chat: ChatServer) -> None:
    async with ExClient(auth=NTLMAuth(*ALICE)) as http_client:
        client = openai.AsyncOpenAI(
            base_url=chat.url + "/v1", api_key="unused", http_client=http_client, max_retries=0
        )
        for text in ("one", "two"):
            completion = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": text}]
            )
            assert completion.choices[0].message.content == f"{text} (for EXAMPLE\\alice)"
    # The Bearer header got a 401 each time, and the handshake ran again on the same connection.
    assert [(r.scheme, r.status) for r in chat.log] == [
        ("Bearer", 401),
        ("NTLM", 401),
        ("NTLM", 200),
    ] * 2
    assert chat.handshakes_completed == 2
    assert chat.connections_opened == 1


@_SDK_GENERATORS_LEFT_OPEN
async def test_openai_streamed_chat_completion_behind_ntlm(chat: ChatServer) -> None:
    async with ExClient(auth=NTLMAuth(*ALICE)) as http_client:
        client = openai.AsyncOpenAI(
            base_url=chat.url + "/v1", api_key="unused", http_client=http_client, max_retries=0
        )
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            extra_headers=NO_BEARER,
        )
        async with stream:
            parts = [chunk.choices[0].delta.content async for chunk in stream]
        assert "".join(p for p in parts if p) == "one two three (for EXAMPLE\\alice)"
        assert len(parts) == 4
    assert chat.handshakes_completed == 1


async def test_openai_concurrent_completions_each_handshake_stays_on_its_connection(
    chat: ChatServer,
) -> None:
    results: list[str] = []
    async with ExClient(auth=NTLMAuth(*ALICE)) as http_client:
        client = openai.AsyncOpenAI(
            base_url=chat.url + "/v1", api_key="unused", http_client=http_client, max_retries=0
        )

        async def ask(n: int) -> None:
            completion = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"q{n}"}],
                extra_headers=NO_BEARER,
            )
            results.append(completion.choices[0].message.content or "")

        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(ask, n)
    assert sorted(results) == sorted(f"q{n} (for EXAMPLE\\alice)" for n in range(8))
    # Every connection authenticated once (a leg on the wrong connection would be a 401).
    assert chat.handshakes_completed == chat.connections_opened


@_SDK_GENERATORS_LEFT_OPEN
async def test_openai_through_the_ntlm_proxy_to_an_ntlm_endpoint(
    chat: ChatServer, user_file: Path
) -> None:
    with AuthProxy(user_file=user_file, schemes=("NTLM",)) as proxy:
        async with ExClient(
            auth=NTLMAuth(*ALICE), proxy=proxy.url, proxy_auth=NTLMAuth(*ALICE)
        ) as http_client:
            client = openai.AsyncOpenAI(
                base_url=chat.url + "/v1",
                api_key="unused",
                http_client=http_client,
                max_retries=0,
            )
            completion = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "via proxy"}],
                extra_headers=NO_BEARER,
            )
            assert completion.choices[0].message.content == "via proxy (for EXAMPLE\\alice)"
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "streamed"}],
                stream=True,
                extra_headers=NO_BEARER,
            )
            async with stream:
                parts = [chunk.choices[0].delta.content async for chunk in stream]
            assert "".join(p for p in parts if p) == "streamed (for EXAMPLE\\alice)"
        assert proxy.handshakes_completed == 1
        assert proxy.proxy_credentials_forwarded == 0
        assert proxy.errors == []
    assert chat.handshakes_completed == 1
