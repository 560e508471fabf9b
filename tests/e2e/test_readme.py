"""The README's "Walkthrough with grpcurl", pasted as written, against a real ``wallet-server dev``.

Every ```bash block of that section runs, in order, in one ``bash -euo pipefail`` (so the
shell variables the README sets carry over), from a directory that looks like the repository
root after ``make run``: ``.venv`` is this interpreter's venv and ``.wallet-dev`` the server's
data dir. The one rewrite is the README's literal ``127.0.0.1:50051``/``127.0.0.1:50052`` to
the ports the server actually got (it runs on port 0). Between the blocks the script only adds
markers that split the output per block; a block whose example output starts with ``ERROR:``
(the README says it exits non-zero) runs with ``set +e`` and its exit status is recorded.

Each example output (an unlabelled ``` block after a bash block) is then checked against what
that block really printed: the same lines of plain text (e.g. ``grpcurl list``, the error's
Code/Message/Details), and the same JSON where only ids, times and a few per-run values may
differ. Ids must differ consistently: one id in the README stands for one real id everywhere
(alice's user id in ``Register`` is the principal of her failed transfer in the audit log).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import ServerProcess, child_env, kill_postgres

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Walkthrough with grpcurl"
PUBLIC_ADDRESS = "127.0.0.1:50051"
MTLS_ADDRESS = "127.0.0.1:50052"
SCRIPT_TIMEOUT = 60.0
TIME_BUDGET = 60.0  # seconds for the whole test: a bound against hangs, not a speed test
MARKER = "@@readme-block {}@@"
EXIT_MARKER = "@@readme-exit {}@@"

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TIMESTAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z"
# Values that differ on every run and carry no id: grpcurl shows them, the README cannot.
PER_RUN = {
    "latency": r"\d+(?:\.\d+)?s",
    "peer": r"ipv4:127\.0\.0\.1:\d+",
    "next_page_token": r"[A-Za-z0-9_-]+",
}
ELLIPSIS = "..."


@dataclass
class Block:
    """One ```bash block and the example output the README shows after it, if any."""

    code: str
    example: str | None = None

    @property
    def expected_to_fail(self) -> bool:
        return self.example is not None and self.example.startswith("ERROR:")


@dataclass
class Ran:
    stdout: str
    stderr: str
    exit_code: int | None = None  # recorded only for blocks expected to fail


@dataclass
class Ids:
    """README id -> real id, one to one across the whole walkthrough."""

    real_for: dict[str, str] = field(default_factory=dict)

    def bind(self, shown: str, real: str, where: str) -> None:
        known = self.real_for.setdefault(shown, real)
        assert known == real, f"{where}: README id {shown} stood for {known}, here {real}"
        others = [s for s, r in self.real_for.items() if r == real and s != shown]
        assert not others, f"{where}: real id {real} shown as both {shown} and {others[0]}"


def walkthrough_blocks(readme: str) -> list[Block]:
    """The section's ```bash blocks in order, each with the plain ``` block that follows it."""
    start = readme.index(SECTION) + len(SECTION)
    end = readme.find("\n## ", start)
    section = readme[start : end if end != -1 else len(readme)]
    blocks: list[Block] = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", section, re.MULTILINE | re.DOTALL):
        language, body = match.group(1), match.group(2)
        if language == "bash":
            blocks.append(Block(body))
        elif language == "":
            assert blocks, "an example output before any command"
            assert blocks[-1].example is None, f"two example outputs after one block:\n{body}"
            blocks[-1].example = body
    return blocks


def script(blocks: list[Block], ports: dict[str, int]) -> str:
    lines = []
    for number, block in enumerate(blocks):
        # The only rewrite of the README's text: its fixed ports become the real ones.
        code = block.code.replace(PUBLIC_ADDRESS, f"127.0.0.1:{ports['port']}").replace(
            MTLS_ADDRESS, f"127.0.0.1:{ports['mtls_port']}"
        )
        marker = MARKER.format(number)
        lines.append(f"printf '%s\\n' '{marker}'; printf '%s\\n' '{marker}' >&2")
        if block.expected_to_fail:
            lines += ["set +e", code, "readme_exit=$?", "set -e"]
            lines.append(f"printf '%s\\n' \"{EXIT_MARKER.format('$readme_exit')}\"")
        else:
            lines.append(code)
    return "\n".join(lines) + "\n"


def split_output(stdout: str, stderr: str, count: int) -> list[Ran]:
    def per_block(text: str) -> list[str]:
        parts = re.split(r"^@@readme-block (\d+)@@\n", text, flags=re.MULTILINE)
        assert parts[0] == "", f"output before the first block: {parts[0]!r}"
        numbers = [int(n) for n in parts[1::2]]
        assert numbers == list(range(count)), f"blocks that ran: {numbers}"
        return parts[2::2]

    ran = []
    for out, err in zip(per_block(stdout), per_block(stderr), strict=True):
        exit_match = re.search(r"^@@readme-exit (\d+)@@\n", out, re.MULTILINE)
        exit_code = int(exit_match.group(1)) if exit_match else None
        if exit_match:
            out = out[: exit_match.start()] + out[exit_match.end() :]
        ran.append(Ran(out, err, exit_code))
    return ran


def split_documents(text: str) -> tuple[list[str], list[str]]:
    """Plain lines and top-level JSON documents (``{`` ... ``}`` at column 0)."""
    plain: list[str] = []
    documents: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if current is None and line == "{":
            current = [line]
        elif current is not None:
            current.append(line)
            if line == "}":
                documents.append("\n".join(current))
                current = None
        elif line.strip():
            plain.append(line.rstrip())
    assert current is None, f"unterminated JSON document:\n{text}"
    return plain, documents


def parse_example_json(text: str) -> Any:
    """JSON in which a line ``...`` stands for more members or elements."""
    lines: list[str] = []
    stack: list[str] = []
    for line in text.splitlines():
        if line.strip() == ELLIPSIS:
            lines.append(f'"{ELLIPSIS}": null' if stack[-1] == "{" else f'"{ELLIPSIS}"')
            continue
        lines.append(line)
        for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', line):
            if char in "[{":
                stack.append(char)
            elif char in "]}":
                stack.pop()
    return json.loads("\n".join(lines))


def match_string(shown: str, real: str, ids: Ids, where: str) -> None:
    """Equal, except that ids and times in ``shown`` stand for any id or time."""
    pattern = ""
    shown_ids = []
    for piece in re.split(f"({UUID}|{TIMESTAMP})", shown):
        if re.fullmatch(UUID, piece):
            pattern += f"({UUID})"
            shown_ids.append(piece)
        elif re.fullmatch(TIMESTAMP, piece):
            pattern += TIMESTAMP
        else:
            pattern += re.escape(piece)
    found = re.fullmatch(pattern, real)
    assert found, f"{where}: README shows {shown!r}, the server printed {real!r}"
    for shown_id, real_id in zip(shown_ids, found.groups(), strict=True):
        ids.bind(shown_id, real_id, where)


def match_json(shown: Any, real: Any, ids: Ids, where: str) -> None:
    if isinstance(shown, dict):
        assert isinstance(real, dict), f"{where}: README shows an object, got {real!r}"
        more = shown.get(ELLIPSIS, 0) is None
        keys = {k for k in shown if k != ELLIPSIS}
        missing = keys - real.keys()
        assert not missing, f"{where}: README shows {sorted(missing)}, the server printed {real}"
        if not more:
            extra = real.keys() - keys
            assert not extra, f"{where}: the server also printed {sorted(extra)}: {real}"
        for key in sorted(keys):
            if key in PER_RUN:
                assert isinstance(real[key], str), f"{where}.{key}: {real[key]!r}"
                assert re.fullmatch(PER_RUN[key], real[key]), f"{where}.{key}: {real[key]!r}"
            else:
                match_json(shown[key], real[key], ids, f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(real, list), f"{where}: README shows a list, got {real!r}"
        more = bool(shown) and shown[-1] == ELLIPSIS
        items = shown[:-1] if more else shown
        if more:
            assert len(real) >= len(items), f"{where}: {len(real)} items, README shows more"
        else:
            assert len(real) == len(items), f"{where}: {len(real)} items, README shows {len(items)}"
        for index, item in enumerate(items):
            match_json(item, real[index], ids, f"{where}[{index}]")
    elif isinstance(shown, str):
        assert isinstance(real, str), f"{where}: README shows {shown!r}, got {real!r}"
        match_string(shown, real, ids, where)
    else:
        assert shown == real, f"{where}: README shows {shown!r}, the server printed {real!r}"


def check_example(example: str, ran: Ran, ids: Ids, where: str) -> None:
    """The example's plain lines are the real ones; its JSON documents the real last ones."""
    printed = ran.stderr if example.startswith("ERROR:") else ran.stdout
    shown_plain, shown_documents = split_documents(example)
    real_plain, real_documents = split_documents(printed)
    if example.startswith("ERROR:"):
        # grpcurl puts the error on stderr; the README shows those lines as printed (a tab too).
        shown_plain = [line.strip() for line in shown_plain]
        real_plain = [line.strip() for line in real_plain]
    assert real_plain == shown_plain, (
        f"{where}: README shows\n" + "\n".join(shown_plain) + "\nthe shell printed\n" + printed
    )
    assert len(real_documents) >= len(shown_documents), f"{where}: printed\n{printed}"
    # "The second call prints": an example may show only the last of a block's outputs.
    tail = real_documents[len(real_documents) - len(shown_documents) :]
    for index, (shown, real) in enumerate(zip(shown_documents, tail, strict=True)):
        match_json(parse_example_json(shown), json.loads(real), ids, f"{where} output {index}")


def minor(money: dict[str, Any]) -> int:
    """grpcurl prints int64 as a string and leaves zero out."""
    return int(money.get("amount_minor", "0"))


def run_script(text: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", text],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=child_env(),
        start_new_session=True,  # its own process group, so a hung grpcurl goes with it
    )
    try:
        stdout, stderr = proc.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"walkthrough still running after {SCRIPT_TIMEOUT:.0f} s\n{stdout}\n{stderr}"
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_readme_walkthrough_runs_as_pasted_and_prints_what_it_shows(tmp_path: Path) -> None:
    started = time.monotonic()
    blocks = walkthrough_blocks(README.read_text())
    assert len(blocks) >= 8, f"only {len(blocks)} bash blocks in {SECTION!r}"
    failing = [n for n, b in enumerate(blocks) if b.expected_to_fail]
    assert failing, "the walkthrough's error example is gone"

    data_dir = tmp_path / "wallet-dev"
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent, target_is_directory=True)
    (root / ".wallet-dev").symlink_to(data_dir, target_is_directory=True)

    server = ServerProcess.start(
        ["dev", "--data-dir", str(data_dir), "--port", "0", "--mtls-port", "0"],
        log_dir=tmp_path / "logs",
        ready_file=tmp_path / "ready.json",
    )
    try:
        ports = server.wait_ready()
        done = run_script(script(blocks, ports), root)
        assert done.returncode == 0, (
            f"the walkthrough failed ({done.returncode})\n--- stdout\n{done.stdout}"
            f"\n--- stderr\n{done.stderr}\n--- server stderr\n{server.stderr}"
        )
        ran = split_output(done.stdout, done.stderr, len(blocks))

        ids = Ids()
        for number, (block, result) in enumerate(zip(blocks, ran, strict=True)):
            where = f"block {number + 1}"
            if block.expected_to_fail:
                assert result.exit_code not in (None, 0), f"{where} succeeded:\n{result.stdout}"
            else:
                assert "ERROR" not in result.stderr, f"{where}:\n{result.stderr}"
            if block.example is not None:
                check_example(block.example, result, ids, where)

        # The key facts, from what the server printed, whatever the README shows.
        everything = done.stdout
        assert '"status": "SERVING"' in everything
        for service in ("AuthService", "WalletService", "PartnerService", "AdminService"):
            assert re.search(rf"^wallet\.v1\.{service}$", everything, re.MULTILINE), service
        error = ran[failing[0]]
        assert "Code: FailedPrecondition" in error.stderr, error.stderr
        assert '"reason":"INSUFFICIENT_FUNDS"' in error.stderr, error.stderr
        # The account block echoes $ALICE_USD; her balance after the transfer is 75.00 USD.
        alice_usd = next(
            line for r in ran for line in r.stdout.splitlines() if re.fullmatch(UUID, line)
        )
        documents = [json.loads(doc) for r in ran for doc in split_documents(r.stdout)[1]]
        balances = [
            (
                d["account"]["account_id"],
                minor(d["account"]["posted"]),
                minor(d["account"]["available"]),
            )
            for d in documents
            if "posted" in d.get("account", {})
        ]
        assert balances == [(alice_usd, 7_500, 7_500)], balances

        assert server.terminate() == 0, server.stderr
    finally:
        server.kill()
        kill_postgres(data_dir)
    elapsed = time.monotonic() - started
    assert elapsed < TIME_BUDGET, f"the README test took {elapsed:.1f} s"
