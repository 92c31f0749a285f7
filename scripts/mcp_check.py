"""Checks a Shoal MCP server with the official MCP Python SDK (PyPI `mcp`).

Usage:
  mcp_check.py http  URL_OF_/mcp   READ_TOKEN ADMIN_TOKEN
  mcp_check.py stdio SHOAL_MCP_BIN API_URL READ_TOKEN ADMIN_TOKEN

Run by scripts/mcp-check.sh (which installs the SDK) against a live
orchestrator whose state a simulator keeps changing, with
api.issue_commands = true. With the read token it lists the tools, calls
each read tool, lists and reads a resource, subscribes to it and waits for
a change notification, and is refused `issue_command`; with the admin token
it issues a command and waits until the state shows it. Prints one line
per step and a final `mcp-check: ok ...` line; exits 1 on the first
failure, saying what failed.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated
from mcp.shared._httpx_utils import create_mcp_http_client

READ_TOOLS = ["find_commands", "get_command", "get_recent_alerts", "get_state", "list_entities", "summarize"]
DEADLINE_S = 45.0


class CheckFailed(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def step(name: str, detail: str = "") -> None:
    print(f"mcp-check: {name}: ok {detail}".rstrip(), flush=True)


def client_for(argv: list[str], token: str) -> Client:
    if argv[0] == "http":
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        return Client(streamable_http_client(argv[1], http_client=http), read_timeout_seconds=30)
    if argv[0] == "stdio":
        params = StdioServerParameters(
            command=argv[1],
            args=["--api-url", argv[2]],
            env={"SHOAL_MCP_TOKEN": token, "RUST_LOG": "warn"},
        )
        return Client(params, read_timeout_seconds=30)
    raise CheckFailed(f"unknown transport {argv[0]!r} (expected http or stdio)")


async def call(client: Client, tool: str, arguments: dict) -> tuple[bool, dict]:
    result = await client.call_tool(tool, arguments)
    structured = result.structured_content
    if structured is None and result.content:
        structured = json.loads(result.content[0].text)
    return bool(result.is_error), structured or {}


async def reads(client: Client) -> str:
    """Every read tool, resources, and a change notification; returns a symbol."""
    tools = await client.list_tools()
    names = sorted(t.name for t in tools.tools)
    check(names == sorted(READ_TOOLS + ["issue_command", "list_approvals", "approve_command", "reject_command"]), f"tools listed: {names}")
    for tool in tools.tools:
        check(bool(tool.description) and tool.input_schema.get("type") == "object", f"{tool.name} is described")
        check(tool.output_schema is not None, f"{tool.name} has an output schema")
    step("list tools", f"{len(names)} tools")

    error, listed = await call(client, "list_entities", {"kind": "symbol"})
    check(not error and listed.get("entities"), f"list_entities: {listed}")
    symbol = listed["entities"][0]["key"]
    error, state = await call(client, "get_state", {"kind": "symbol", "key": symbol})
    check(not error, f"get_state: {state}")
    check("offset" in state.get("provenance", {}), f"get_state carries provenance: {state}")
    check(state.get("freshness", {}).get("watermarks"), f"get_state carries freshness: {state}")
    error, alerts = await call(client, "get_recent_alerts", {"limit": 5})
    check(not error and "alerts" in alerts, f"get_recent_alerts: {alerts}")
    error, commands = await call(client, "find_commands", {"limit": 5})
    check(not error and "commands" in commands, f"find_commands: {commands}")
    if commands["commands"]:
        command_id = commands["commands"][0]["id"]
        error, command = await call(client, "get_command", {"id": command_id})
        check(not error and command.get("key"), f"get_command: {command}")
    else:
        error, command = await call(client, "get_command", {"id": str(uuid.uuid4())})
        check(error and command["error"]["status"] == 404, f"get_command of an unknown id: {command}")
    error, summary = await call(client, "summarize", {"kind": "symbol", "max_tokens": 300})
    check(not error and summary["tokens"] <= 300 and symbol in summary["summary"], f"summarize: {summary}")
    error, bad = await call(client, "get_state", {"kind": "symbol", "key": "NO-SUCH-SYMBOL"})
    check(error and bad["error"]["status"] == 404, f"an unknown entity is a tool error: {bad}")
    step("call read tools", f"symbol={symbol} summary_tokens={summary['tokens']}")

    resources = await client.list_resources()
    uris = [r.uri for r in resources.resources]
    uri = f"shoal://state/symbol/{symbol}"
    check(uri in [str(u) for u in uris], f"{uri} among the resources {uris[:5]}...")
    read = await client.read_resource(uri)
    doc = json.loads(read.contents[0].text)
    check(doc["key"] == symbol and "provenance" in doc and "freshness" in doc, f"resource {uri}: {doc}")
    templates = await client.list_resource_templates()
    check(templates.resource_templates, "a resource template")
    step("resources", f"{len(uris)} listed, read {uri}")

    started = time.monotonic()
    with anyio.fail_after(DEADLINE_S):
        async with client.listen(resource_subscriptions=[uri]) as subscription:
            check(uri in (subscription.honored.resource_subscriptions or []), f"subscription honoured: {subscription.honored}")
            async for event in subscription:
                if isinstance(event, ResourceUpdated) and str(event.uri) == uri:
                    break
    step("change notification", f"{uri} after {time.monotonic() - started:.1f}s")

    alert = {"symbol": symbol, "level": "1", "previous_price": "0.5", "price": "1.5"}
    error, refused = await call(client, "issue_command", {"kind": "raise_alert", "key": symbol, "payload": alert})
    check(error and refused["error"]["status"] == 403, f"issue_command with a read token is refused: {refused}")
    step("issue_command refused to a read token", refused["error"]["message"])
    return symbol


async def acts(client: Client, symbol: str) -> None:
    level = f"{int(time.time() * 1000) % 1_000_000}.125"
    alert = {"symbol": symbol, "level": level, "previous_price": "0.5", "price": "1.5"}
    arguments = {"kind": "raise_alert", "key": symbol, "payload": alert, "reason": "mcp-check"}
    error, bad = await call(client, "issue_command", {**arguments, "payload": {"symbol": symbol}})
    check(error and bad["error"]["status"] == 400 and bad["error"]["parameter"] == "payload", f"bad payload: {bad}")
    error, answer = await call(client, "issue_command", arguments)
    check(not error and answer["status"] == "requested", f"issue_command with the admin token: {answer}")
    check(answer["requested_by"]["via"] == "mcp", f"recorded as coming through MCP: {answer}")
    deadline = time.monotonic() + DEADLINE_S
    while True:
        error, found = await call(client, "find_commands", {"key": symbol, "limit": 1000})
        issued = [c for c in found.get("commands", []) if c.get("kind") == "raise_alert"]
        mine = []
        for command in issued:
            error, full = await call(client, "get_command", {"id": command["id"]})
            payload = ((full.get("state") or {}).get("issued") or {}).get("payload") or {}
            if payload.get("level") == level:
                mine.append(full)
        if mine:
            break
        check(time.monotonic() < deadline, f"the requested command shows up in the state within {DEADLINE_S}s")
        await anyio.sleep(0.5)
    step("issue_command with the admin token", f"request {answer['request_id']} issued as command {mine[0]['key']}")


async def main(argv: list[str]) -> None:
    if len(argv) < 4:
        raise CheckFailed(__doc__ or "usage")
    read_token, admin_token = argv[-2], argv[-1]
    async with client_for(argv, read_token) as client:
        symbol = await reads(client)
    async with client_for(argv, admin_token) as client:
        await acts(client, symbol)
    print(f"mcp-check: ok transport={argv[0]}", flush=True)


if __name__ == "__main__":
    try:
        anyio.run(main, sys.argv[1:])
    except CheckFailed as failure:
        print(f"mcp-check: FAILED: {failure}", flush=True)
        sys.exit(1)
