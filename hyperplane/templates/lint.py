"""cfn-lint on a template file, through its Python API (runs a library).

``lint(path, region="us-east-1") -> (errors, warnings)``: the file is read within
the bounds of ``load`` (size, nesting, alias-expanded nodes: cfn-lint is never
handed an alias bomb), decoded by cfn-lint (its loader keeps line numbers) and
checked by its rules for ``region``.  Each error (a rule ``E*``, or a file cfn-lint
cannot decode) is a ``TopologyError(path, where, "E3002 ... (line N)")`` whose
``where`` is the place cfn-lint names (``Resources.Vpc.Properties.CidrBlok``);
each warning (``W*``) is a line ``FILE:LINE: W2001 Parameters.Unused: ...``.
Informational rules (``I*``) are not run (cfn-lint's default).  Messages are cut
to ``MAX_MESSAGE`` characters.

Skipped (``SKIPPED``), because they only matter for a real deployment and fire on
ordinary templates written for the emulator:

    W1011        "use dynamic references over parameters for secrets": the
                 emulator has no SSM or Secrets Manager, so a password is a
                 (NoEcho) parameter
    W3010        "availability zones should not be hardcoded": hard-coding is a
                 portability concern across accounts; the emulator's zones are
                 always ``<region>a``, ``b``, ``c``
    E2531, W2531, E2533  Lambda runtime deprecation: verdicts that depend on
                 today's date against AWS's schedule (a template valid today would
                 fail next year), about what AWS lets one create or update

A ``.cfnlintrc`` in the home or current folder applies, as it does for cfn-lint
itself, and so does a template's ``Metadata: cfn-lint: config``.

cfn-lint takes about a second to import and load its rules: it is imported on
the first call and its rules are kept for the next ones.
"""

from __future__ import annotations

from typing import Any

import yaml

from hyperplane.errors import TopologyError
from hyperplane.model.document import check_bounds
from hyperplane.model.fields import FILE_PATH
from hyperplane.templates.load import read_text

SKIPPED = ("W1011", "W3010", "E2531", "W2531", "E2533")
MAX_MESSAGE = 300
_rules: list[Any] = []  # cfn-lint's rules, loaded once


def _loaded_rules() -> Any:
    if not _rules:
        from cfnlint.config import ConfigMixIn  # noqa: PLC0415 (slow to import: lazily)
        from cfnlint.runner import Runner  # noqa: PLC0415

        _rules.append(Runner(ConfigMixIn(regions=["us-east-1"])).rules)
    return _rules[0]


def _where(path: list | tuple | None) -> str:
    text = ""
    for part in path or ():
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or FILE_PATH


def _message(match: Any) -> str:
    message = " ".join(str(match.message).split())
    return message[:MAX_MESSAGE] + "..." if len(message) > MAX_MESSAGE else message


def lint(path: str, region: str = "us-east-1") -> tuple[list[TopologyError], list[str]]:
    """cfn-lint's errors (as ``TopologyError``) and warnings (as lines) for ``path``."""
    text = read_text(path)
    problem = _bounds_problem(text, path)
    if problem is not None:
        return [problem], []
    from cfnlint.config import ConfigMixIn  # noqa: PLC0415
    from cfnlint.decode.decode import decode_str  # noqa: PLC0415
    from cfnlint.runner import run_template_by_data  # noqa: PLC0415

    template, matches = decode_str(text)
    if not matches and template is not None:
        config = ConfigMixIn(regions=[region], ignore_checks=list(SKIPPED))
        matches = list(run_template_by_data(template, config, _loaded_rules()))
    errors: list[TopologyError] = []
    warnings: list[str] = []
    for match in sorted(matches, key=lambda m: (m.linenumber or 0, m.rule.id)):
        rule = match.rule.id
        if rule in SKIPPED:
            continue
        where = _where(getattr(match, "path", None))
        line = getattr(match, "linenumber", None)
        if rule.startswith("E"):
            at = f" (line {line})" if line else ""
            errors.append(TopologyError(path, where, f"{rule} {_message(match)}{at}"))
        elif rule.startswith("W"):
            warnings.append(f"{path}:{line}: {rule} {where}: {_message(match)}")
    return errors, warnings


def _bounds_problem(text: str, path: str) -> TopologyError | None:
    try:
        problem = check_bounds(text.replace("\t", " ") if text.lstrip().startswith("{")
                               else text)
    except yaml.YAMLError:
        return None  # cfn-lint reports the syntax error itself, with its line
    return TopologyError(path, FILE_PATH, problem) if problem else None
