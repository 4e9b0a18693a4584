"""What every provider adapter is: the ``Provider`` protocol.

An adapter translates one ``ChatRequest`` into its provider's wire format and the answer back into
OpenAI's, in the vocabulary of ``gateway.core.answer``. It raises ``UpstreamFailure`` for any
failed attempt, before or during a stream; it never decides about failover, which is
``gateway.upstream.failover``'s job. Imports only ``core``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from gateway.core.answer import Completion, Deployment, Json
from gateway.core.chat import ChatRequest


class Provider(Protocol):
    """One wire format. Instances are shared by every deployment of that provider."""

    async def complete(self, request: ChatRequest, deployment: Deployment) -> Completion:
        """The whole answer; raises ``UpstreamFailure``."""
        ...

    def stream(self, request: ChatRequest, deployment: Deployment) -> AsyncGenerator[Json, None]:
        """OpenAI ``chat.completion.chunk`` objects as they arrive; raises ``UpstreamFailure``.

        The last chunk carries ``usage`` (with empty ``choices``) when the provider reports it.
        Leaving the iteration early (``aclose``) releases the upstream connection.
        """
        ...
