"""Workflow membership as the result backend records it: save_workflow, saved groups, chords, chains' children."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult, GroupResult

from pushserver.backend import ResultBackend, leaf_ids
from pushserver.worker import save_workflow
from pushserver.workflows import CHAIN, CHORD, GROUP, Membership


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("membership-test", backend="cache+memory://", set_as_current=False)
    yield app
    app.close()


def results(app: Celery, *ids: str, parent: Any = None) -> list[AsyncResult]:
    return [AsyncResult(i, app=app, parent=parent) for i in ids]


def membership(app: Celery, workflow_id: str, limit: int = 100) -> Membership:
    backend = ResultBackend(app)
    try:
        return backend._membership(workflow_id, limit)
    finally:
        backend.close()


def test_a_saved_group_is_a_group_of_its_children_in_order(app: Celery) -> None:
    group = GroupResult("g", results(app, "a", "b", "c"), app=app)
    assert save_workflow(group) == "g"
    assert membership(app, "g") == Membership("g", GROUP, ("a", "b", "c"))


def test_a_chord_is_saved_with_its_body_and_read_back_as_a_chord(app: Celery) -> None:
    header = GroupResult("h", results(app, "a", "b"), app=app)
    body = AsyncResult("body", app=app, parent=header)
    assert save_workflow(body) == "h"
    assert membership(app, "h") == Membership("h", CHORD, ("a", "b", "body"), "body")
    # The header still restores as Celery's chord code reads it: the same children.
    restored = GroupResult.restore("h", app=app)
    assert [r.id for r in restored.results] == ["a", "b"]


def test_a_chain_result_names_its_first_task(app: Celery) -> None:
    first = AsyncResult("first", app=app)
    second = AsyncResult("second", app=app, parent=first)
    assert save_workflow(AsyncResult("third", app=app, parent=second)) == "first"
    with pytest.raises(TypeError):
        save_workflow("not a result")


def test_a_chain_is_walked_through_the_children_the_backend_records(app: Celery) -> None:
    spawned = GroupResult("inner", results(app, "x", "y"), app=app)
    # What a worker stores: each finished task with the results it started meanwhile (its request's children).
    app.backend.store_result("first", 1, "SUCCESS", request=SimpleNamespace(children=[AsyncResult("second", app=app)]))
    app.backend.store_result("second", 2, "SUCCESS", request=SimpleNamespace(children=[spawned]))
    found = membership(app, "first")
    assert (found.kind, found.task_ids) == (CHAIN, ("first", "second", "x", "y"))


def test_an_unknown_id_is_a_chain_of_itself(app: Celery) -> None:
    assert membership(app, "nobody") == Membership("nobody", CHAIN, ("nobody",))


def test_membership_stops_past_the_limit(app: Celery) -> None:
    GroupResult("big", results(app, *(f"t{i}" for i in range(50))), app=app).save()
    assert len(membership(app, "big", limit=10).task_ids) == 11


def test_leaf_ids_flattens_nested_groups_and_chains_inside_a_group(app: Celery) -> None:
    chain_end = AsyncResult("c2", app=app, parent=AsyncResult("c1", app=app))
    nested = GroupResult(
        "n", [*results(app, "a"), GroupResult("inner", results(app, "b", "c"), app=app), chain_end], app=app
    )
    assert leaf_ids(nested, 100) == ["a", "b", "c", "c1", "c2"]
