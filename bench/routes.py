"""Calls of a router that check their premise: which route answered each request.

A benchmark row of a route is worth a ratio only if that route answered it; `RoutedCalls`
counts every answer by route, and `premise` says why a row's premise failed (empty when it
held), so the report can refuse the ratio instead of printing a wrong one.
"""

from collections import Counter

from router.client import AsyncRouterClient, Policy, Prediction, Route

__all__ = ["RoutedCalls", "premise"]


class RoutedCalls:
    """Predictions of `texts` in turn, by the policy of `route` (None: AUTO, any route)."""

    def __init__(
        self, client: AsyncRouterClient, task: str, texts: list[str], route: Route | None
    ) -> None:
        self.routes: Counter[Route] = Counter()
        self.route = route
        self._client, self._task, self._texts = client, task, texts
        self._policy = Policy.MODEL_ONLY if route is Route.MODEL else Policy.AUTO

    async def __call__(self, index: int) -> Prediction:
        answer = await self._client.predict(
            self._task, self._texts[index % len(self._texts)], policy=self._policy
        )
        self.routes[answer.route] += 1
        return answer

    @property
    def answers(self) -> int:
        return sum(self.routes.values())

    @property
    def cache_share(self) -> float:
        return self.routes[Route.CACHE] / self.answers if self.answers else float("nan")

    def reset(self) -> None:
        self.routes.clear()


def premise(calls: RoutedCalls) -> str:
    """Why the calls' premise failed (some answer came from another route); empty when held."""
    if calls.answers == 0:
        return "no answer at all"
    if calls.route is None:
        return ""
    wrong = calls.answers - calls.routes[calls.route]
    if wrong:
        return f"{wrong} of {calls.answers} answers did not come from the {calls.route.value}"
    return ""
