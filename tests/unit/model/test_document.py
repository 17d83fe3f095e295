"""Reading a topology file within bounds: size, nesting, nodes after alias expansion.

A hostile file fails fast with one ``TopologyError`` naming the file and the bound,
and never formats an unbounded value into its message.  The subprocess checks run
the CLI as a user would (``validate``) and look at its exit code, its one line and
its peak memory (not its time: speed is the benchmark's business).
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from hyperplane.errors import TopologyError
from hyperplane.model import document
from hyperplane.model.document import check_bounds, load_topology, read_yaml
from hyperplane.model.fields import shown

ROOT = Path(__file__).resolve().parents[3]
BOMB = ROOT / "examples" / "invalid" / "yaml_alias_bomb.yaml"
DEEP = ROOT / "examples" / "invalid" / "yaml_too_deep.yaml"


def laughs(levels: int, width: int = 9) -> str:
    lines = ['account: "111111111111"', 'x0: &a0 [' + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_a_small_aliased_document_is_within_bounds() -> None:
    assert check_bounds(laughs(3)) is None  # 9 + 81 + 729 nodes


def test_expanded_size_counts_every_alias() -> None:
    assert check_bounds(laughs(6), max_nodes=10**6) is None     # ~600k nodes
    problem = check_bounds(laughs(7), max_nodes=10**6)          # ~5.3M nodes
    assert problem is not None and "aliases are expanded" in problem


def test_nesting_is_bounded() -> None:
    assert check_bounds("a: " + "[" * 63 + "]" * 63) is None  # and the root mapping: 64
    problem = check_bounds("a: " + "[" * 64 + "]" * 64)
    assert problem is not None and "nesting deeper than 64" in problem


def test_mappings_nest_too() -> None:
    text = "".join("  " * i + f"k{i}:\n" for i in range(70)) + "  " * 70 + "v: 1\n"
    problem = check_bounds(text)
    assert problem is not None and "nesting" in problem


def test_a_file_too_large_is_refused_before_reading(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("account: '111111111111'\n" + "# padding\n" * 2000)
    monkeypatch.setattr(document, "MAX_BYTES", 1000)
    with pytest.raises(TopologyError) as info:
        read_yaml(str(path))
    assert "bytes; at most 1000" in info.value.reason


def test_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="is a directory"):
        load_topology(str(tmp_path))


@pytest.mark.parametrize("path, words", [(BOMB, "aliases are expanded"),
                                         (DEEP, "nesting deeper than 64")])
def test_the_examples_fail_with_the_bound_named(path: Path, words: str) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology(str(path))
    assert info.value.path == "<file>" and words in info.value.reason
    assert len(str(info.value)) < 300


def test_values_are_shown_bounded() -> None:
    nested: list = ["lol"] * 9
    for _ in range(8):
        nested = [nested] * 9  # what an alias bomb builds: shared, exponentially wide
    assert len(shown(nested)) < 200
    assert len(shown("x" * 10**6)) < 100
    assert "too long" in shown(10**5000 - 1)


@pytest.mark.parametrize("path", [BOMB, DEEP], ids=["alias-bomb", "too-deep"])
def test_validate_exits_2_with_one_line_and_little_memory(path: Path) -> None:
    code = ("import resource, sys\n"
            "from hyperplane.cli.main import main\n"
            "try:\n"
            "    main(['validate', sys.argv[1]])\n"
            "finally:\n"
            "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "    print(f'peak-kb {peak}', file=sys.stdout)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "<file>" in lines[0]
    peak_kb = int(done.stdout.split("peak-kb")[1])
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak_kb < max(200_000, baseline_kb * 2)  # a few dozen MB, not gigabytes
