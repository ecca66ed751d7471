"""Workflows with real workers (docs/protocol.md, Workflows): groups, chords and chains as one WorkflowState."""

from __future__ import annotations

import asyncio
from typing import Any

from celery import chain, chord, group
from celery.canvas import Signature

from dev.stack import free_port, http_get, http_status, is_ready, start_pushserver, wait_until
from pushserver.worker import save_workflow
from tests.support.clients import Watcher
from tests.support.stack import Server, Stack
from tests.support.tcpproxy import TcpProxy


def sig(stack: Stack, name: str, *args: Any) -> Signature:
    """An immutable signature of an example task (a chain or chord body ignores what came before)."""
    return stack.celery.signature(f"workers.tasks.{name}", args=args, immutable=True)


def succeeded(total: int) -> Any:
    return lambda s: s["state"] == "SUCCESS" and s["total"] == total


async def test_a_saved_group_of_20_is_pushed_live_to_its_final_success(stack: Stack, server: Server) -> None:
    result = group(sig(stack, "demo_progress", 3, 0.1) for _ in range(20)).apply_async()
    workflow_id = save_workflow(result)
    assert workflow_id == result.id
    w = await Watcher(server.url).connect()
    try:
        ack = await w.subscribe(workflow_id, server.token(workflow_id), workflows=True)
        assert ack["ok"], ack
        [first] = ack["workflows"]
        assert (first["workflow_id"], first["kind"], first["total"]) == (workflow_id, "group", 20)
        assert first["task_ids"] == [child.id for child in result.results]
        assert sum(first["counts"].values()) == 20
        done = await w.wait_workflow(workflow_id, succeeded(20), timeout=60)
        assert done == {**done, "counts": {"SUCCESS": 20}, "completed": 20, "failed": 0, "percent": 100.0}
        updates = w.workflow_updates[workflow_id]
        # Pushed live: counts that moved on the way, never backwards in finished members.
        assert len(updates) > 2
        assert any(0 < u["completed"] < 20 or u["state"] == "STARTED" for u in updates)
        finished = [u["completed"] + u["failed"] for u in updates]
        assert finished == sorted(finished)
        # The ack gave the members; a group's never move, so no update repeats them on the wire.
        assert w.workflow_payloads[workflow_id] and not any("task_ids" in u for u in w.workflow_payloads[workflow_id])
        # A token naming the workflow grants its members too.
        member = result.results[0].id
        assert (await w.subscribe(member, server.token(workflow_id)))["ok"]
        # And GET /tasks/{id} (the same check, access.py) for a member, not for another task.
        bearer = {"Authorization": f"Bearer {server.token(workflow_id)}"}
        status, body = await asyncio.to_thread(http_get, f"{server.url}/tasks/{member}", bearer)
        assert status == 200 and b'"SUCCESS"' in body, (status, body)
        status, _ = await asyncio.to_thread(http_get, f"{server.url}/tasks/not-a-member", bearer)
        assert status == 403
    finally:
        await w.close()
    assert [child.result for child in result.results] == [3] * 20


async def test_a_chord_succeeds_with_its_body(stack: Stack, server: Server) -> None:
    result = chord(sig(stack, "demo_progress", 2, 0.1) for _ in range(10))(sig(stack, "sleep", 0.3))
    workflow_id = save_workflow(result)
    assert workflow_id == result.parent.id
    w = await Watcher(server.url).connect()
    try:
        ack = await w.subscribe(workflow_id, server.token(workflow_id), workflows=True)
        [first] = ack["workflows"]
        assert (first["kind"], first["total"], first["task_ids"][-1]) == ("chord", 11, result.id)
        done = await w.wait_workflow(workflow_id, succeeded(11), timeout=60)
        assert done["counts"] == {"SUCCESS": 11}
        # Never SUCCESS before the body ran: the header alone is 10 of 11.
        for update in w.workflow_updates[workflow_id]:
            assert update["state"] != "SUCCESS" or update["completed"] == 11
    finally:
        await w.close()


async def test_a_chain_of_3_grows_as_its_steps_are_sent(stack: Stack, server: Server) -> None:
    result = chain(
        sig(stack, "demo_progress", 2, 0.2), sig(stack, "demo_progress", 2, 0.2), sig(stack, "demo_progress", 2, 0.2)
    ).apply_async()
    workflow_id = save_workflow(result)
    assert workflow_id == result.parent.parent.id
    w = await Watcher(server.url).connect()
    try:
        ack = await w.subscribe(workflow_id, server.token(workflow_id), workflows=True)
        [first] = ack["workflows"]
        assert first["kind"] == "chain"
        assert first["task_ids"][0] == workflow_id
        done = await w.wait_workflow(workflow_id, succeeded(3), timeout=60)
        assert done["task_ids"] == [result.parent.parent.id, result.parent.id, result.id]
        # After the end, a new subscriber's ack is the final state itself.
        late = await Watcher(server.url).connect()
        try:
            [final] = (await late.subscribe(workflow_id, server.token(workflow_id), workflows=True))["workflows"]
            assert (final["state"], final["total"], final["task_ids"]) == ("SUCCESS", 3, done["task_ids"])
        finally:
            await late.close()
        # Each step that joined came with the new task_ids, held (merged) by the client until the next.
        assert any("task_ids" in u for u in w.workflow_payloads[workflow_id])
        assert all(len(u["task_ids"]) == u["total"] for u in w.workflow_updates[workflow_id])
        totals = [u["total"] for u in w.workflow_updates[workflow_id]]
        assert totals == sorted(totals)
        assert not any(u["state"] == "SUCCESS" and u["total"] < 3 for u in w.workflow_updates[workflow_id])
    finally:
        await w.close()


async def test_one_failing_member_fails_the_group(stack: Stack, server: Server) -> None:
    result = group([*(sig(stack, "sleep", 0.5) for _ in range(4)), sig(stack, "fail", "boom")]).apply_async()
    workflow_id = save_workflow(result)
    w = await Watcher(server.url).connect()
    try:
        await w.subscribe(workflow_id, server.token(workflow_id), workflows=True)
        failed = await w.wait_workflow(workflow_id, lambda s: s["state"] == "FAILURE", timeout=60)
        assert failed["failed"] == 1
        # FAILURE as soon as it cannot succeed: before the others finished, and it stays.
        assert failed["completed"] < 4
        end = await w.wait_workflow(workflow_id, lambda s: s["completed"] + s["failed"] == 5, timeout=60)
        assert (end["state"], end["counts"]) == ("FAILURE", {"FAILURE": 1, "SUCCESS": 4})
    finally:
        await w.close()


async def test_a_late_subscribe_after_completion_gets_the_final_state(stack: Stack, server: Server) -> None:
    result = group(sig(stack, "sleep", 0.05) for _ in range(5)).apply_async()
    workflow_id = save_workflow(result)
    await asyncio.to_thread(wait_until, result.ready, 30, "the group to finish", interval=0.1)
    w = await Watcher(server.url).connect()
    try:
        ack = await w.subscribe([workflow_id], server.token(workflow_id), workflows=True)
        [state] = ack["workflows"]
        assert (state["state"], state["total"], state["counts"], state["percent"]) == (
            "SUCCESS",
            5,
            {"SUCCESS": 5},
            100.0,
        )
        assert (await w.call("unsubscribe", {"workflow_id": workflow_id})) == {"ok": True}
    finally:
        await w.close()


async def test_refusals_forbidden_and_too_many(stack: Stack) -> None:
    server = stack.server("workflow-limits", extra=["--max-workflow-size", "3"])
    result = group(sig(stack, "sleep", 0.01) for _ in range(4)).apply_async()
    workflow_id = save_workflow(result)
    w = await Watcher(server.url).connect()
    try:
        forbidden = await w.subscribe(workflow_id, server.token("another"), workflows=True)
        assert forbidden["error"]["code"] == "forbidden"
        too_many = await w.subscribe(workflow_id, server.token(workflow_id), workflows=True)
        assert too_many["ok"] is False
        assert too_many["error"]["code"] == "too_many"
        assert "--max-workflow-size" in too_many["error"]["message"]
    finally:
        await w.close()
        server.proc.stop()


async def test_a_server_restart_mid_workflow(stack: Stack) -> None:
    port = free_port()
    before = stack.server("workflow-restart-before", port=port)
    result = group(sig(stack, "demo_progress", 10, 0.4) for _ in range(6)).apply_async()  # ~4 s each
    workflow_id = save_workflow(result)
    w = await Watcher(before.url, resubscribe=True).connect()
    try:
        assert (await w.subscribe(workflow_id, before.token(workflow_id), workflows=True))["ok"]
        await w.wait_workflow(workflow_id, lambda s: s["state"] == "STARTED", timeout=30)
        assert await asyncio.to_thread(before.proc.stop) == 0
        after = stack.server("workflow-restart-after", port=port)
        try:
            await w.wait_connects(2, timeout=30)
            done = await w.wait_workflow(workflow_id, succeeded(6), timeout=60)
            assert done["counts"] == {"SUCCESS": 6}
            ack = next(a for a in w.resubscribe_acks if a.get("ok"))
            # The new server knew the group from the result backend alone.
            [again] = ack["workflows"]
            assert (again["kind"], again["total"], again["task_ids"]) == (
                "group",
                6,
                [child.id for child in result.results],
            )
        finally:
            after.proc.stop()
    finally:
        await w.close()


async def test_fanout_webhooks_saves_its_group_and_both_its_ids_are_workflows(stack: Stack, server: Server) -> None:
    # The suite's workers keep the default webhook address guard: deliveries to loopback are refused,
    # each a FAILURE at once, which the fan-out's WorkflowState counts like any other.
    urls = [f"http://127.0.0.1:9/hook/{i}" for i in range(5)]
    fanout = stack.send("fanout_webhooks", urls, payload={"event": "order.paid"})
    returned = await asyncio.to_thread(fanout.get, timeout=30)
    w = await Watcher(server.url).connect()
    try:
        # The fan-out task's own id: a workflow of itself and the deliveries it spawned (their root_id).
        await w.subscribe(fanout.id, server.token(fanout.id), workflows=True)
        whole = await w.wait_workflow(fanout.id, lambda s: s["completed"] + s["failed"] == 6, timeout=60)
        assert (whole["kind"], whole["state"], whole["counts"]) == ("chain", "FAILURE", {"FAILURE": 5, "SUCCESS": 1})
        assert whole["task_ids"][0] == fanout.id
        assert sorted(whole["task_ids"][1:]) == sorted(returned["task_ids"])
        # A late subscribe to the finished fan-out answers its end at once.
        late = await Watcher(server.url).connect()
        try:
            [again] = (await late.subscribe(fanout.id, server.token(fanout.id), workflows=True))["workflows"]
            assert (again["state"], again["total"], again["counts"]) == ("FAILURE", 6, {"FAILURE": 5, "SUCCESS": 1})
        finally:
            await late.close()
        # The saved group: its id, returned by the task, is a workflow of the deliveries.
        group_id = returned["group_id"]
        ack = await w.subscribe(group_id, server.token(group_id), workflows=True)
        [state] = ack["workflows"]
        assert (state["kind"], state["state"], state["task_ids"]) == ("group", "FAILURE", returned["task_ids"])
        assert state["counts"] == {"FAILURE": 5}
    finally:
        await w.close()


async def test_a_group_finishing_while_the_receiver_is_away_is_reconciled(stack: Stack, server: Server) -> None:
    # Only the server's broker connection goes through the proxy: workers and the result backend keep running.
    proxy = TcpProxy("127.0.0.1", stack.redis_port).start()
    proc, url = start_pushserver(
        "workflow-reconnect", f"redis://127.0.0.1:{proxy.port}/0", stack.backend, stack.log_dir, secret=server.secret
    )
    try:
        wait_until(lambda: is_ready(url), 20, "the server to be ready")
        result = group(sig(stack, "sleep", 1.0) for _ in range(4)).apply_async()
        workflow_id = save_workflow(result)
        w = await Watcher(url).connect()
        try:
            ack = await w.subscribe(workflow_id, server.token(workflow_id), workflows=True)
            assert ack["workflows"][0]["state"] != "SUCCESS"
            proxy.cut()
            await asyncio.to_thread(wait_until, lambda: http_status(url + "/readyz") == 503, 15, "a lost broker")
            await asyncio.to_thread(wait_until, result.ready, 30, "the group to finish while away", interval=0.1)
            proxy.restore()
            done = await w.wait_workflow(workflow_id, succeeded(4), timeout=30)
            assert done["counts"] == {"SUCCESS": 4}
        finally:
            await w.close()
    finally:
        proc.stop()
        proxy.close()
